//! GPU tests of the launch path with hand-written PTX. They need a GPU, so they are compiled only
//! with the `gpu-tests` feature: `cargo test -p tessera-runtime --lib --features gpu-tests`.

use crate::device::{DeviceArg, Runtime, RuntimeError};
use crate::tensor::TensorView;
use tessera_compiler::tir::{Dim, HostExpr, Param, ParamKind};
use tessera_compiler::{DType, HostTensor, KernelMeta, Scalar, Target};

/// Writes what it received to `out` (f64[16]): x's sizes and strides, each scalar, x[1][2]
/// read through the strides, out's size and stride, and the launch shape.
const ABI_PTX: &str = r#"
.version 8.0
.target sm_90a
.address_size 64

.visible .entry abi_probe(
    .param .u64 .ptr.global.align 8 out_ptr, .param .u32 out_n, .param .u64 out_s,
    .param .u64 .ptr.global.align 4 x_ptr, .param .u32 x_n0, .param .u32 x_n1, .param .u64 x_s0, .param .u64 x_s1,
    .param .f32 p_f32, .param .u32 p_i32, .param .u8 p_bool, .param .b16 p_f16,
    .param .u64 p_i64, .param .f64 p_f64)
.maxntid 64, 1, 1
{
    .reg .b32 %r<12>;
    .reg .b64 %rd<12>;
    .reg .f32 %f<4>;
    .reg .f64 %fd<20>;
    .reg .b16 %h<3>;
    .reg .pred %p<2>;
    mov.u32 %r0, %tid.x;
    setp.ne.u32 %p0, %r0, 0;
    @%p0 bra DONE;
    ld.param.u64 %rd0, [out_ptr];
    cvta.to.global.u64 %rd0, %rd0;
    ld.param.u32 %r2, [x_n0];
    cvt.rn.f64.s32 %fd0, %r2;
    st.global.f64 [%rd0+0], %fd0;
    ld.param.u32 %r3, [x_n1];
    cvt.rn.f64.s32 %fd1, %r3;
    st.global.f64 [%rd0+8], %fd1;
    ld.param.u64 %rd1, [x_s0];
    cvt.rn.f64.s64 %fd2, %rd1;
    st.global.f64 [%rd0+16], %fd2;
    ld.param.u64 %rd2, [x_s1];
    cvt.rn.f64.s64 %fd3, %rd2;
    st.global.f64 [%rd0+24], %fd3;
    ld.param.f32 %f0, [p_f32];
    cvt.f64.f32 %fd4, %f0;
    st.global.f64 [%rd0+32], %fd4;
    ld.param.u32 %r4, [p_i32];
    cvt.rn.f64.s32 %fd5, %r4;
    st.global.f64 [%rd0+40], %fd5;
    ld.param.u8 %h0, [p_bool];
    cvt.rn.f64.u16 %fd6, %h0;
    st.global.f64 [%rd0+48], %fd6;
    ld.param.b16 %h1, [p_f16];
    cvt.f32.f16 %f1, %h1;
    cvt.f64.f32 %fd7, %f1;
    st.global.f64 [%rd0+56], %fd7;
    ld.param.u64 %rd3, [p_i64];
    cvt.rn.f64.s64 %fd8, %rd3;
    st.global.f64 [%rd0+64], %fd8;
    ld.param.f64 %fd9, [p_f64];
    st.global.f64 [%rd0+72], %fd9;
    ld.param.u64 %rd4, [x_ptr];
    cvta.to.global.u64 %rd4, %rd4;
    mul.lo.s64 %rd5, %rd2, 2;
    add.s64 %rd5, %rd5, %rd1;
    shl.b64 %rd5, %rd5, 2;
    add.s64 %rd6, %rd4, %rd5;
    ld.global.f32 %f2, [%rd6];
    cvt.f64.f32 %fd10, %f2;
    st.global.f64 [%rd0+80], %fd10;
    ld.param.u32 %r5, [out_n];
    cvt.rn.f64.s32 %fd11, %r5;
    st.global.f64 [%rd0+88], %fd11;
    ld.param.u64 %rd7, [out_s];
    cvt.rn.f64.s64 %fd12, %rd7;
    st.global.f64 [%rd0+96], %fd12;
    mov.u32 %r6, %ntid.x;
    cvt.rn.f64.u32 %fd13, %r6;
    st.global.f64 [%rd0+104], %fd13;
    mov.u32 %r7, %nctaid.x;
    cvt.rn.f64.u32 %fd14, %r7;
    st.global.f64 [%rd0+112], %fd14;
    mov.u32 %r8, %nctaid.y;
    cvt.rn.f64.u32 %fd15, %r8;
    st.global.f64 [%rd0+120], %fd15;
DONE:
    ret;
}

.extern .shared .align 16 .b8 smem[];

.visible .entry big_smem(.param .u64 .ptr.global.align 4 out_ptr, .param .u32 out_n, .param .u64 out_s, .param .u32 nbytes)
.maxntid 32, 1, 1
{
    .reg .b32 %r<8>;
    .reg .b64 %rd<2>;
    ld.param.u32 %r0, [nbytes];
    sub.u32 %r1, %r0, 4;
    mov.u32 %r2, smem;
    add.u32 %r3, %r2, %r1;
    mov.u32 %r4, 12345;
    st.shared.u32 [%r3], %r4;
    bar.sync 0;
    ld.shared.u32 %r5, [%r3];
    ld.param.u64 %rd0, [out_ptr];
    cvta.to.global.u64 %rd0, %rd0;
    st.global.u32 [%rd0], %r5;
    ret;
}
"#;

fn sym(s: &str) -> Dim {
    Dim::Sym(s.into())
}

fn tensor(name: &str, dtype: DType, dims: Vec<Dim>, mutable: bool) -> Param {
    Param { name: name.into(), kind: ParamKind::Tensor { dtype, dims, mutable } }
}

fn scalar(name: &str, dtype: DType) -> Param {
    Param { name: name.into(), kind: ParamKind::Scalar { dtype } }
}

/// Metadata for hand-written PTX: the ABI parts derived from `params`, as the compiler does.
fn with_abi(meta: KernelMeta) -> KernelMeta {
    KernelMeta { dims: KernelMeta::dims_of(&meta.params), ptx_params: KernelMeta::abi_of(&meta.params, &meta.tensor_maps), ..meta }
}

fn abi_meta() -> KernelMeta {
    with_abi(KernelMeta {
        name: "abi_probe".into(),
        target: Target::Sm90a,
        params: vec![
            tensor("out", DType::F64, vec![Dim::Const(16)], true),
            tensor("x", DType::F32, vec![sym("M"), sym("N")], false),
            scalar("a", DType::F32),
            scalar("b", DType::I32),
            scalar("c", DType::Bool),
            scalar("d", DType::F16),
            scalar("e", DType::I64),
            scalar("f", DType::F64),
        ],
        consts: vec![],
        grid: vec![HostExpr::Sym("M".into()), HostExpr::Int(2)],
        threads: 64,
        shared_bytes: 0,
        requires: vec![],
        ..KernelMeta::default()
    })
}

fn runtime() -> Runtime {
    match Runtime::new() {
        Ok(rt) => rt,
        Err(e) => panic!("these tests need a GPU: {e}"),
    }
}

#[test]
fn abi_probe_sees_every_parameter() {
    let rt = runtime();
    eprintln!("device: {} sm_{}{}", rt.device_name(), rt.compute_capability().0, rt.compute_capability().1);
    let k = rt.load(ABI_PTX, &abi_meta()).unwrap();
    eprintln!("abi_probe: {} registers, {} bytes local", k.registers(), k.local_bytes());
    let x: Vec<f64> = (0..15).map(|i| i as f64).collect();
    let x = rt.upload(&HostTensor::from_f64(DType::F32, &[3, 5], &x)).unwrap();
    let out = rt.alloc_filled(DType::F64, &[16], 0xff).unwrap();
    let args = [
        DeviceArg::Tensor(&out),
        DeviceArg::Tensor(&x),
        DeviceArg::Scalar(Scalar::Float(0.125)),
        DeviceArg::Scalar(Scalar::Int(-7)),
        DeviceArg::Scalar(Scalar::Bool(true)),
        DeviceArg::Scalar(Scalar::Float(1.5)),
        DeviceArg::Scalar(Scalar::Int(1 << 40)),
        DeviceArg::Scalar(Scalar::Float(0.1)),
    ];
    rt.launch(&k, &args).unwrap();
    let got = rt.download(&out).unwrap().to_f64_vec();
    let want = [3.0, 5.0, 5.0, 1.0, 0.125, -7.0, 1.0, 1.5, (1u64 << 40) as f64, 0.1, 7.0, 16.0, 1.0, 64.0, 3.0, 2.0];
    assert_eq!(got, want);

    // A grid with a zero axis launches nothing: the poisoned output stays NaN.
    let empty = rt.upload(&HostTensor::zeros(DType::F32, &[0, 5])).unwrap();
    let out2 = rt.alloc_filled(DType::F64, &[16], 0xff).unwrap();
    let mut args2 = args;
    args2[0] = DeviceArg::Tensor(&out2);
    args2[1] = DeviceArg::Tensor(&empty);
    rt.launch(&k, &args2).unwrap();
    assert!(rt.download(&out2).unwrap().to_f64_vec().iter().all(|v| v.is_nan()));

    // Binding errors come before the launch.
    let mut bad = args;
    bad[1] = DeviceArg::Tensor(&out);
    assert!(matches!(rt.launch(&k, &bad), Err(RuntimeError::Bind(_))));
    let mut bad = args;
    bad[3] = DeviceArg::Scalar(Scalar::Int(1 << 33));
    let e = rt.launch(&k, &bad).unwrap_err();
    assert!(matches!(&e, RuntimeError::Bind(m) if m.contains("does not fit in i32")), "{e}");

    // Round trips of every dtype through device memory.
    for dtype in DType::ALL {
        let t = HostTensor::from_f64(dtype, &[2, 3], &[1.0, 0.0, 2.0, 3.0, 1.0, 5.0]);
        assert_eq!(rt.download(&rt.upload(&t).unwrap()).unwrap(), t);
    }
    let t = HostTensor::zeros(DType::F32, &[0]);
    assert_eq!(rt.download(&rt.upload(&t).unwrap()).unwrap(), t);
}

#[test]
fn large_dynamic_shared_memory_is_opted_into() {
    let rt = runtime();
    let bytes = 200 * 1024;
    let meta = with_abi(KernelMeta {
        name: "big_smem".into(),
        target: Target::Sm90a,
        params: vec![tensor("out", DType::U32, vec![Dim::Const(1)], true), scalar("nbytes", DType::I32)],
        consts: vec![],
        grid: vec![HostExpr::Int(1)],
        threads: 32,
        shared_bytes: bytes,
        requires: vec![],
        ..KernelMeta::default()
    });
    let k = rt.load(ABI_PTX, &meta).unwrap();
    let out = rt.alloc_filled(DType::U32, &[1], 0).unwrap();
    rt.launch(&k, &[DeviceArg::Tensor(&out), DeviceArg::Scalar(Scalar::Int(bytes as i64))]).unwrap();
    assert_eq!(rt.download(&out).unwrap().get_i64(0), 12345);

    // More than the device has is refused at load time.
    let too_big = KernelMeta { shared_bytes: 1 << 20, ..meta.clone() };
    let e = rt.load(ABI_PTX, &too_big).unwrap_err();
    assert!(matches!(e, RuntimeError::Resources(_)), "{e}");
    // Metadata that disagrees with the PTX never reaches the driver.
    let too_many = KernelMeta { threads: 2048, ..meta.clone() };
    let e = rt.load(ABI_PTX, &too_many).unwrap_err();
    assert!(matches!(e, RuntimeError::Mismatch(_)), "{e}");
    let other_threads = KernelMeta { threads: 64, ..meta.clone() };
    let e = rt.load(ABI_PTX, &other_threads).unwrap_err();
    assert!(matches!(&e, RuntimeError::Mismatch(m) if m.contains("[32, 1, 1] threads per block, the metadata says 64")), "{e}");
    let mut bytes_not_words = meta;
    bytes_not_words.params[0] = tensor("out", DType::U8, vec![Dim::Const(1)], true);
    let e = rt.load(ABI_PTX, &bytes_not_words).unwrap_err();
    assert!(matches!(&e, RuntimeError::Mismatch(m) if m.contains("`out` is u8 (1-byte elements)")), "{e}");
}

#[test]
fn load_errors_are_explained() {
    let rt = runtime();
    // The signature agrees with the metadata; the body does not assemble.
    let bogus = ABI_PTX.replace("DONE:\n    ret;", "DONE:\n    bogus;\n    ret;");
    let e = rt.load(&bogus, &abi_meta()).unwrap_err();
    eprintln!("{e}");
    assert!(matches!(&e, RuntimeError::Cuda(m) if m.contains("loading the PTX of kernel `abi_probe`")), "{e}");
    let e = rt.load(ABI_PTX, &KernelMeta { name: "nope".into(), ..abi_meta() }).unwrap_err();
    eprintln!("{e}");
    assert!(matches!(&e, RuntimeError::Mismatch(m) if m.contains("does not define the entry point `nope`")), "{e}");
    let e = rt.load(ABI_PTX, &KernelMeta { name: "abi\0probe".into(), ..abi_meta() }).unwrap_err();
    assert!(matches!(&e, RuntimeError::Mismatch(m) if m.contains("not an identifier")), "{e}");
    if rt.compute_capability() == (9, 0) {
        assert!(rt.supports(Target::Sm80));
    }
}

/// The vector-add example, compiled by the library.
fn vector_add() -> (KernelMeta, String) {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/vector_add.tile")).unwrap();
    let m = tessera_compiler::compile(&tessera_compiler::Source::new("vector_add.tile", text), &tessera_compiler::Options::default())
        .map_err(|d| d.render())
        .unwrap();
    (m.kernels[0].meta.clone(), m.kernels[0].ptx.clone())
}

/// Every bad launch is an error that names the problem, and launches nothing: the poisoned
/// output stays NaN.
#[test]
fn bad_launches_launch_nothing() {
    let rt = runtime();
    let (meta, ptx) = vector_add();
    let k = rt.load(&ptx, &meta).unwrap();
    let x = rt.tensor(&[1.0f32; 100], &[100]).unwrap();
    let y = rt.tensor(&[2.0f32; 100], &[100]).unwrap();
    let z = rt.alloc_filled(DType::F32, &[100], 0xff).unwrap();
    let untouched = |what: &str| {
        let v: Vec<f32> = rt.download_vec(&z).unwrap();
        assert!(v.iter().all(|v| v.is_nan()), "{what}: the kernel ran");
    };
    let ints = rt.tensor(&[1i32; 100], &[100]).unwrap();
    let matrix = rt.tensor(&[1.0f32; 100], &[10, 10]).unwrap();
    let short = rt.tensor(&[1.0f32; 99], &[99]).unwrap();
    let cases: Vec<(&str, Vec<DeviceArg>, &str)> = vec![
        ("count", vec![x.arg(), y.arg()], "takes 3 arguments, got 2"),
        ("dtype", vec![x.arg(), ints.arg(), DeviceArg::Tensor(&z)], "argument `y`: expected dtype f32, got i32"),
        ("rank", vec![matrix.arg(), y.arg(), DeviceArg::Tensor(&z)], "argument `x`: expected a tensor of rank 1"),
        ("symbols", vec![x.arg(), short.arg(), DeviceArg::Tensor(&z)], "dimension `N` disagrees: `x` has N = 100, but `y` has N = 99"),
        ("scalar", vec![x.arg(), 1.0f32.into(), DeviceArg::Tensor(&z)], "argument `y`: expected a tensor"),
    ];
    for (what, args, want) in cases {
        let e = rt.launch(&k, &args).unwrap_err();
        assert!(matches!(&e, RuntimeError::Bind(m) if m.contains(want)), "{what}: {e}");
        untouched(what);
    }
    // A tensor whose shape outgrew its buffer (the fields are public).
    let mut liar = rt.upload_slice(&[1.0f32; 10], &[10]).unwrap();
    liar.shape = vec![100];
    let e = rt.launch(&k, &[DeviceArg::Tensor(&liar), y.arg(), DeviceArg::Tensor(&z)]).unwrap_err();
    assert!(matches!(&e, RuntimeError::BadTensor(m) if m.contains("needs 400 bytes, its buffer has 40")), "{e}");
    untouched("small buffer");
    // A view past its buffer is refused when it is made.
    let e = TensorView::new(&x, 50, &[100], &[1]).unwrap_err();
    assert!(e.to_string().contains("past its 400-byte buffer"), "{e}");
    assert!(x.view().narrow(0, 90, 20).is_err());
    // A failed #[require]: softmax needs C <= BC.
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/softmax.tile")).unwrap();
    let opts = tessera_compiler::Options { consts: vec![("BC".into(), tessera_compiler::ConstValue::Int(64))], ..Default::default() };
    let m = tessera_compiler::compile(&tessera_compiler::Source::new("softmax.tile", text), &opts).map_err(|d| d.render()).unwrap();
    let sk = rt.load(&m.kernels[0].ptx, &m.kernels[0].meta).unwrap();
    let wide = rt.tensor(&vec![0.5f32; 2 * 100], &[2, 100]).unwrap();
    let out = rt.alloc_filled(DType::F32, &[2, 100], 0xff).unwrap();
    let e = rt.launch(&sk, &[wide.arg(), DeviceArg::Tensor(&out)]).unwrap_err();
    assert!(
        matches!(&e, RuntimeError::Bind(m) if m.contains("requirement `C <= BC` failed (C = 100, BC = 64)") || m.contains("C <= BC")),
        "{e}"
    );
    assert!(rt.download_vec::<f32>(&out).unwrap().iter().all(|v| v.is_nan()));
    // And the kernel still runs after all of that.
    rt.launch(&k, &[x.arg(), y.arg(), DeviceArg::Tensor(&z)]).unwrap();
    assert_eq!(rt.download_vec::<f32>(&z).unwrap(), vec![3.0f32; 100]);
}

/// Strided views launch with their strides: the ABI probe sees a transposed view's strides and
/// reads x[1][2] through them; a narrowed view starts at its offset.
#[test]
fn views_pass_their_strides_and_offsets() {
    let rt = runtime();
    let k = rt.load(ABI_PTX, &abi_meta()).unwrap();
    let data: Vec<f32> = (0..15).map(|i| i as f32).collect();
    let x = rt.tensor(&data, &[5, 3]).unwrap(); // x.T is [3, 5] with strides [1, 3]
    let xt = x.view().transpose(0, 1).unwrap();
    assert!(!xt.is_contiguous());
    let out = rt.alloc_filled(DType::F64, &[16], 0xff).unwrap();
    let scalars: [DeviceArg; 6] = [1.0f32.into(), 1i32.into(), true.into(), 1.0f32.into(), 1i64.into(), 1.0f64.into()];
    let mut args = vec![DeviceArg::Tensor(&out), xt.into()];
    args.extend(scalars);
    rt.launch(&k, &args).unwrap();
    let got = rt.download_vec::<f64>(&out).unwrap();
    // sizes 3, 5; strides 1, 3; x.T[1][2] = x[2][1] = 7.
    assert_eq!((got[0], got[1], got[2], got[3], got[10]), (3.0, 5.0, 1.0, 3.0, 7.0));
    // Rows 2..5 of x: x[2..][1][2] = x[3][2] = 11.
    let rows = x.view().narrow(0, 2, 3).unwrap();
    args[1] = rows.into();
    rt.launch(&k, &args).unwrap();
    let got = rt.download_vec::<f64>(&out).unwrap();
    assert_eq!((got[0], got[1], got[2], got[3], got[10]), (3.0, 3.0, 3.0, 1.0, 11.0));
}

/// Launches on a second stream, ordered against uploads and downloads on the default stream;
/// typed tensors round-trip.
#[test]
fn streams_and_typed_tensors() {
    let rt = runtime();
    let (meta, ptx) = vector_add();
    let k = rt.load(&ptx, &meta).unwrap();
    let n = 1 << 20;
    let xs: Vec<f32> = (0..n).map(|i| (i % 1000) as f32).collect();
    let x = rt.tensor(&xs, &[n]).unwrap();
    let y = rt.tensor(&xs, &[n]).unwrap();
    let z = rt.zeros::<f32>(&[n]).unwrap();
    let s = rt.new_stream().unwrap();
    for _ in 0..10 {
        rt.launch_on(&s, &k, &[x.arg(), y.arg(), z.arg()]).unwrap();
    }
    // The download is on the default stream: it waits for the kernels on `s`.
    let got = z.to_vec(&rt).unwrap();
    assert!(got.iter().zip(&xs).all(|(g, x)| *g == 2.0 * x));
    s.synchronize().unwrap();
    assert!(rt.download_vec::<i32>(&z).is_err());
    assert_eq!(rt.tensor(&[true, false], &[2]).unwrap().to_vec(&rt).unwrap(), [true, false]);
}

/// AOT: the PTX and JSON pair, written as `tessera build --emit ptx,meta -o DIR` writes it, is
/// read back and launched through the runtime alone.
#[test]
fn aot_pair_loads_without_the_compiler() {
    let rt = runtime();
    let (meta, ptx) = vector_add();
    let dir = std::env::temp_dir().join(format!("tessera-gpu-aot-{}", std::process::id()));
    crate::aot::AotKernel { meta, ptx }.write(&dir).unwrap();
    let k = crate::aot::AotKernel::read(&dir, "vector_add").unwrap().load(&rt).unwrap();
    let x = rt.tensor(&[1.5f32; 3000], &[3000]).unwrap();
    let z = rt.zeros::<f32>(&[3000]).unwrap();
    rt.launch(&k, &[x.arg(), x.arg(), z.arg()]).unwrap();
    assert_eq!(z.to_vec(&rt).unwrap(), vec![3.0f32; 3000]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Timing, the launch overhead, and the tuner on the matmul example at a small size.
#[test]
fn timing_overhead_and_tuning() {
    let rt = runtime();
    let (meta, ptx) = vector_add();
    let k = rt.load(&ptx, &meta).unwrap();
    let x = rt.tensor(&[1.0f32; 4096], &[4096]).unwrap();
    let z = rt.zeros::<f32>(&[4096]).unwrap();
    let args = [x.arg(), x.arg(), z.arg()];
    let t = crate::bench::time_kernel(&rt, &k, &args, &crate::bench::TimingOptions::default()).unwrap();
    eprintln!("vector_add 4096: {t:?}");
    assert!(t.median_ms > 0.0 && t.min_ms <= t.median_ms && t.median_ms <= t.max_ms && t.reps >= 5);
    let o = crate::bench::launch_overhead(&rt, &k, &args, 10_000).unwrap();
    eprintln!("launch overhead: {o:?}");
    assert!(o.per_launch_us > 0.0 && o.submit_us <= o.per_launch_us && o.driver_us > 0.0);

    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/matmul.tile")).unwrap();
    let src = tessera_compiler::Source::new("matmul.tile", text);
    let opts = tessera_compiler::Options { kernel: Some("matmul".into()), ..Default::default() };
    let cache = crate::cache::Cache::in_memory();
    let base = cache.get_or_compile(&src, &opts).map_err(|d| d.render()).unwrap();
    let meta = base.artifacts.kernels[0].meta.clone();
    let (m, n, kk) = (200, 136, 72);
    let a = rt.upload(&HostTensor::from_f64(DType::BF16, &[m, kk], &vec![0.5; m * kk])).unwrap();
    let b = rt.upload(&HostTensor::from_f64(DType::BF16, &[kk, n], &vec![0.25; kk * n])).unwrap();
    let c = rt.alloc_filled(DType::BF16, &[m, n], 0xff).unwrap();
    let args = [DeviceArg::Tensor(&a), DeviceArg::Tensor(&b), DeviceArg::Tensor(&c)];
    let req = crate::tune::TuneRequest {
        src: &src,
        opts: &opts,
        kernel: "matmul",
        meta: &meta,
        timing: crate::bench::TimingOptions { warmup_ms: 2.0, rep_ms: 5.0, min_reps: 3, ..Default::default() },
        retune: false,
    };
    let mut notes = vec![];
    let mut steps = 0;
    let tuned = crate::tune::tune(&rt, &cache, &req, &args, &mut notes, &mut |_| steps += 1).unwrap();
    eprintln!("{}", tuned.table());
    for n in &notes {
        eprintln!("{n}");
    }
    assert_eq!(tuned.trials.len(), 32);
    assert!(steps > 32 && !tuned.from_cache);
    assert_eq!(tuned.bucket, "M<=256,K<=128,N<=256");
    assert!(matches!(tuned.best().outcome, crate::tune::Outcome::Timed { .. }));
    // The winner is cached for this kernel, bucket and device.
    let again = crate::tune::tune(&rt, &cache, &req, &args, &mut notes, &mut |_| {}).unwrap();
    assert!(again.from_cache);
    assert_eq!(again.best().config, tuned.best().config);
    // The winner computes the product: 72 · 0.5 · 0.25 = 9.
    let best = cache.get_or_compile(&src, &tuned.best().config.apply(&opts)).map_err(|d| d.render()).unwrap();
    let k = rt.load(&best.artifacts.kernels[0].ptx, &best.artifacts.kernels[0].meta).unwrap();
    rt.launch(&k, &args).unwrap();
    assert!(rt.download(&c).unwrap().to_f64_vec().iter().all(|&v| v == 9.0));
}
