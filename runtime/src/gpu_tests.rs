//! GPU tests of the launch path with hand-written PTX. They need a GPU, so they are compiled only
//! with the `gpu-tests` feature: `cargo test -p tessera-runtime --lib --features gpu-tests`.

use crate::device::{DeviceArg, Runtime, RuntimeError};
use tessera_compiler::tir::{Dim, HostExpr, Param, ParamKind};
use tessera_compiler::{DType, HostTensor, KernelMeta, Scalar, Target};

/// Writes what it received to `out` (f64[16]): x's sizes and strides, each scalar, x[1][2]
/// read through the strides, out's size and stride, and the launch shape.
const ABI_PTX: &str = r#"
.version 8.0
.target sm_90a
.address_size 64

.visible .entry abi_probe(
    .param .u64 out_ptr, .param .u32 out_n, .param .u64 out_s,
    .param .u64 x_ptr, .param .u32 x_n0, .param .u32 x_n1, .param .u64 x_s0, .param .u64 x_s1,
    .param .f32 p_f32, .param .u32 p_i32, .param .u8 p_bool, .param .b16 p_f16,
    .param .u64 p_i64, .param .f64 p_f64)
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

.visible .entry big_smem(.param .u64 out_ptr, .param .u32 out_n, .param .u64 out_s, .param .u32 nbytes)
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

fn abi_meta() -> KernelMeta {
    KernelMeta {
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
    }
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
    let meta = KernelMeta {
        name: "big_smem".into(),
        target: Target::Sm90a,
        params: vec![tensor("out", DType::U32, vec![Dim::Const(1)], true), scalar("nbytes", DType::I32)],
        consts: vec![],
        grid: vec![HostExpr::Int(1)],
        threads: 32,
        shared_bytes: bytes,
        requires: vec![],
    };
    let k = rt.load(ABI_PTX, &meta).unwrap();
    let out = rt.alloc_filled(DType::U32, &[1], 0).unwrap();
    rt.launch(&k, &[DeviceArg::Tensor(&out), DeviceArg::Scalar(Scalar::Int(bytes as i64))]).unwrap();
    assert_eq!(rt.download(&out).unwrap().get_i64(0), 12345);

    // More than the device has is refused at load time.
    let too_big = KernelMeta { shared_bytes: 1 << 20, ..meta.clone() };
    let e = rt.load(ABI_PTX, &too_big).unwrap_err();
    assert!(matches!(e, RuntimeError::Resources(_)), "{e}");
    let too_many = KernelMeta { threads: 2048, ..meta };
    let e = rt.load(ABI_PTX, &too_many).unwrap_err();
    assert!(matches!(e, RuntimeError::Resources(_)), "{e}");
}

#[test]
fn load_errors_are_explained() {
    let rt = runtime();
    let e = rt
        .load(
            ".version 8.0\n.target sm_90a\n.address_size 64\n.visible .entry k() { bogus; }",
            &KernelMeta { name: "k".into(), ..abi_meta() },
        )
        .unwrap_err();
    eprintln!("{e}");
    assert!(matches!(&e, RuntimeError::Cuda(m) if m.contains("loading the PTX of kernel `k`")), "{e}");
    let e = rt.load(ABI_PTX, &KernelMeta { name: "nope".into(), ..abi_meta() }).unwrap_err();
    eprintln!("{e}");
    assert!(matches!(&e, RuntimeError::Cuda(m) if m.contains("no kernel `nope`")), "{e}");
    let e = rt.load(ABI_PTX, &KernelMeta { name: "abi\0probe".into(), ..abi_meta() }).unwrap_err();
    assert!(matches!(e, RuntimeError::Cuda(_)));
    if rt.compute_capability() == (9, 0) {
        assert!(rt.supports(Target::Sm80));
    }
}
