//! Tests of the launch-wide checks of the interpreter: races between programs and the budget of
//! programs (`RunOptions`).

use super::lang_tests::{as_i64, compile, floats, ints, run, t};
use super::{Access, Arg, InterpError, RunOptions, run_kernel, run_kernel_with};
use crate::host::Scalar;

fn run_with(k: &crate::tir::Kernel, args: &mut [Arg], opts: &RunOptions) -> Result<(), InterpError> {
    run_kernel_with(k, args, opts, &mut std::io::sink())
}

/// The race `run_kernel` reports for `k` on `args`: (tensor, element, program, its access, the
/// other program, its access).
fn race(k: &crate::tir::Kernel, mut args: Vec<Arg>) -> (String, Vec<usize>, [u32; 3], Access, [u32; 3], Access) {
    match run_kernel(k, &mut args) {
        Err(InterpError::Race { param, element, program, access, other, other_access }) => {
            (param, element, program, access, other, other_access)
        }
        other => panic!("expected a race, got {other:?}"),
    }
}

#[test]
fn a_program_reading_what_the_next_one_writes_races() {
    // Program i reads y[i + 1] before program i + 1 writes it: on the GPU they run in any order.
    let k = compile("#[grid(N)]\nkernel k(y: &mut f32[N]) { let i = program_id(0); y.store([i], y.load([i + 1], [1]) * 2.0); }", "k");
    let y = || floats(&[4], &[1.0, 2.0, 3.0, 4.0]);
    assert_eq!(race(&k, vec![y()]), ("y".into(), vec![1], [1, 0, 0], Access::Write, [0, 0, 0], Access::Read));
    let mut args = vec![y()];
    let e = run_kernel(&k, &mut args).unwrap_err().to_string();
    assert_eq!(
        e,
        "data race on `y` at element [1]: program (0, 0, 0) read it and program (1, 0, 0) writes it in the same launch; the GPU \
         runs programs in no fixed order, so an element one program writes must not be read or written by another (only atomic \
         updates may come from several programs)"
    );
    // With the check off, grid order gives the "shifted" result the GPU may or may not give.
    let mut args = vec![y()];
    run_with(&k, &mut args, &RunOptions { race_check: false, ..RunOptions::default() }).expect("runs");
    assert_eq!(t(&args[0]).to_f64_vec(), [4.0, 6.0, 8.0, 0.0]);
}

#[test]
fn a_program_reading_what_the_previous_one_wrote_races() {
    let k = compile("#[grid(N)]\nkernel k(y: &mut f32[N]) { let i = program_id(0); y.store([i], y.load([i - 1], [1]) + 1.0); }", "k");
    assert_eq!(race(&k, vec![floats(&[3], &[0.0; 3])]), ("y".into(), vec![0], [1, 0, 0], Access::Read, [0, 0, 0], Access::Write));
}

#[test]
fn writes_of_two_programs_to_one_element_race_on_any_axis() {
    // Every program of a 2 × 3 grid writes row `program_id(1)`: programs (0, j) and (1, j) race.
    let k = compile("#[grid(2, 3)]\nkernel k(y: &mut i32[3, 4]) { y.store([program_id(1), 0], full([1, 4], program_id(0))); }", "k");
    let y = Arg::Tensor(crate::HostTensor::zeros(crate::DType::I32, &[3, 4]));
    assert_eq!(race(&k, vec![y]), ("y".into(), vec![0, 0], [1, 0, 0], Access::Write, [0, 0, 0], Access::Write));
}

#[test]
fn atomics_from_many_programs_do_not_race() {
    // A histogram: 64 programs add into 5 bins.
    let k = compile(
        "#[grid(N)]\nkernel h(x: &i32[N], bins: &mut i32[5]) { let i = program_id(0); bins.atomic_add([x.load([i], [1])], full([1], 1)); }",
        "h",
    );
    let x: Vec<i64> = (0..64).map(|i| i % 5).collect();
    let out = run(&k, vec![ints(&x), ints(&[0; 5])]);
    assert_eq!(as_i64(&out[1]), [13, 13, 13, 13, 12]);
    // But an element updated atomically by one program and read by another races.
    let k = compile(
        "#[grid(2)]\nkernel r(c: &mut i32[1], y: &mut i32[2]) {\n    let i = program_id(0);\n    if i == 0 { c.atomic_add([arange(1)], full([1], 1)); } else { y.store([i], c.load([0], [1])); }\n}",
        "r",
    );
    assert_eq!(race(&k, vec![ints(&[0]), ints(&[0; 2])]), ("c".into(), vec![0], [1, 0, 0], Access::Read, [0, 0, 0], Access::Atomic));
    // And so does a plain write among atomic updates.
    let k = compile(
        "#[grid(2)]\nkernel w(c: &mut i32[1]) {\n    if program_id(0) == 0 { c.atomic_add([arange(1)], full([1], 1)); } else { c.store([0], full([1], 5)); }\n}",
        "w",
    );
    assert_eq!(race(&k, vec![ints(&[0])]), ("c".into(), vec![0], [1, 0, 0], Access::Write, [0, 0, 0], Access::Atomic));
}

#[test]
fn one_program_may_read_and_write_its_own_elements() {
    // Store, load back, store again, update atomically, read again: sequential within a program.
    let k = compile(
        "#[grid(N)]\nkernel k(y: &mut i32[N], z: &mut i32[N]) {\n    let i = program_id(0);\n    y.store([i], full([1], i));\n    let v = y.load([i], [1]) + 1;\n    y.store([i], v);\n    y.atomic_add([i + arange(1)], full([1], 10));\n    z.store([i], y.load([i], [1]));\n}",
        "k",
    );
    let out = run(&k, vec![ints(&[0; 4]), ints(&[0; 4])]);
    assert_eq!(as_i64(&out[1]), [11, 12, 13, 14]);
    // Reads of an input by every program are fine too (only `&mut` tensors are tracked, and
    // reads never race with reads).
    let k = compile("#[grid(N)]\nkernel s(y: &mut i32[N], m: &mut i32[1]) { y.store([program_id(0)], m.load([0], [1])); }", "s");
    let out = run(&k, vec![ints(&[0; 4]), ints(&[7])]);
    assert_eq!(as_i64(&out[0]), [7; 4]);
}

#[test]
fn masked_off_and_out_of_range_elements_are_not_accesses() {
    // Both programs scatter to all four elements, each with the mask of its own half.
    let k = compile(
        "#[grid(2)]\nkernel k(y: &mut i32[4]) {\n    let p = program_id(0);\n    y.scatter([arange(4)], full([4], p + 1), arange(4) / 2 == p);\n}",
        "k",
    );
    assert_eq!(as_i64(&run(&k, vec![ints(&[0; 4])])[0]), [1, 1, 2, 2]);
    // Each program stores 8 columns into its row of 4: the 4 past the row's end are not written
    // (they are not the next row's first elements), and the masked gather of the next row reads
    // nothing.
    let k = compile(
        "#[grid(2)]\nkernel w(y: &mut i32[2, 4]) {\n    let p = program_id(0);\n    let g = y.gather([p + 1 + 0 * arange(8), arange(8)], arange(8) < 0, 0);\n    y[p].store([0], full([8], p + 1) + g);\n}",
        "w",
    );
    let y = Arg::Tensor(crate::HostTensor::zeros(crate::DType::I32, &[2, 4]));
    assert_eq!(as_i64(&run(&k, vec![y])[0]), [1, 1, 1, 1, 2, 2, 2, 2]);
}

#[test]
fn the_grid_is_within_a_budget_of_programs() {
    let k = compile("#[grid(n, m)]\nkernel k(n: i32, m: i32, y: &mut i32[1]) { y.atomic_add([arange(1)], full([1], 1)); }", "k");
    let args = |n: i64, m: i64| vec![Arg::Scalar(Scalar::Int(n)), Arg::Scalar(Scalar::Int(m)), ints(&[0])];
    // 2^31 - 1 programs ran for minutes without a sign of progress; now refused at once.
    let start = std::time::Instant::now();
    let e = run_kernel(&k, &mut args(i32::MAX as i64, 1)).unwrap_err();
    assert!(matches!(e, InterpError::TooManyPrograms { grid: [2147483647, 1, 1], programs: 2147483647, max: 1048576 }), "{e:?}");
    assert!(e.to_string().contains("--interp-max-programs 2147483647"), "{e}");
    assert!(start.elapsed().as_secs() < 5);
    // The budget is the product over the axes, and can be lowered or lifted.
    let opts = RunOptions { max_programs: 6, ..RunOptions::default() };
    let mut a = args(3, 2);
    run_with(&k, &mut a, &opts).expect("6 programs run");
    assert_eq!(as_i64(&a[2]), [6]);
    assert!(matches!(run_with(&k, &mut args(7, 1), &opts), Err(InterpError::TooManyPrograms { programs: 7, max: 6, .. })));
    // Race checking numbers programs in 31 bits: more than that must run without it.
    let opts = RunOptions { max_programs: u64::MAX, ..RunOptions::default() };
    let e = run_with(&k, &mut args(i32::MAX as i64, 2), &opts).unwrap_err();
    assert!(matches!(e, InterpError::TooManyToCheck { programs: 4294967294, .. }), "{e:?}");
    assert!(e.to_string().contains("--no-race-check"), "{e}");
}
