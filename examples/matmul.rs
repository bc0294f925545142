//! Embedding Tessera in a Rust program: compiles `examples/matmul.tile`, runs it on random bf16
//! inputs whose sizes are not multiples of the tile (on the GPU when there is one, otherwise on
//! the reference interpreter), and checks the result against a plain Rust matrix product.
//!
//! Run with `cargo run --release --example matmul [-- M N K]`.

use tessera_compiler::interp::Arg;
use tessera_compiler::{DType, HostTensor, Options, Source};
use tessera_runtime::Runtime;
use tessera_runtime::exec::{self, Rng};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dims: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let (m, n, k) = match dims.as_slice() {
        [m, n, k] => (*m, *n, *k),
        [] => (257, 129, 95),
        _ => return Err("usage: matmul [M N K]".into()),
    };
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/matmul.tile");
    let src = Source::new("examples/matmul.tile", std::fs::read_to_string(path)?);
    let t0 = std::time::Instant::now();
    let module = tessera_compiler::compile(&src, &Options::default()).map_err(|d| d.render())?;
    let kernel = module.kernel("matmul").ok_or("no kernel `matmul`")?;
    println!("compiled matmul.tile in {:.1} ms ({} lines of PTX)", t0.elapsed().as_secs_f64() * 1e3, kernel.ptx.lines().count());

    let mut rng = Rng::new(42);
    let a = exec::random_tensor(DType::BF16, &[m, k], &mut rng);
    let b = exec::random_tensor(DType::BF16, &[k, n], &mut rng);
    let mut args = vec![Arg::Tensor(a.clone()), Arg::Tensor(b.clone()), Arg::Tensor(HostTensor::zeros(DType::BF16, &[m, n]))];
    let backend = match Runtime::new() {
        Ok(rt) => {
            // The output starts as NaN on the GPU: an element the kernel misses fails the check.
            exec::run_gpu(&rt, kernel, &mut args, &[false, false, true])?;
            format!("GPU ({})", rt.device_name())
        }
        Err(e) => {
            println!("no GPU ({e}); using the interpreter");
            exec::run_interp(kernel, &mut args)?;
            "interpreter".to_string()
        }
    };
    let Arg::Tensor(c) = &args[2] else { return Err("output is not a tensor".into()) };

    let mut want = HostTensor::zeros(DType::BF16, &[m, n]);
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k).map(|p| a.get_f64(i * k + p) * b.get_f64(p * n + j)).sum();
            want.set_f64(i * n + j, s);
        }
    }
    let cmp = exec::compare(c, &want);
    println!(
        "C = A·B with M={m}, N={n}, K={k} on the {backend}: {} elements, max abs error {:.2e}, max rel error {:.2e}",
        cmp.n, cmp.max_abs, cmp.max_rel
    );
    println!("C[0, 0..4] = {:?}", (0..n.min(4)).map(|j| c.get_f64(j)).collect::<Vec<_>>());
    if !cmp.ok() {
        return Err(format!("{} elements differ from the reference (first: {:?})", cmp.bad, cmp.first_bad).into());
    }
    println!("ok: matches the reference (tolerance {:.0e} + {:.0e}·|x|)", cmp.atol, cmp.rtol);
    Ok(())
}
