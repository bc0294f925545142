//! `tessera selftest`: every example kernel, on fresh random inputs at awkward sizes (not tile
//! multiples, tiny, one-element and smallest-legal edges), and the conformance programs of
//! `tests/ops` (each built-in at its edges: special float values, casts, integer division,
//! out-of-range windows and indices, masks, duplicates, `-inf` rows, control flow) on inputs
//! made for them ([`inputs`]), run on the GPU and on the interpreter (the reference semantics),
//! every output compared.
//!
//! Outputs that the kernel writes whole are poisoned on both sides first (all-ones bytes on the
//! GPU, NaN on the interpreter), so an element left unwritten fails, and NaN never passes the
//! comparison (programs that produce NaN on purpose store a NaN flag and the value with NaN
//! replaced, so NaN positions are compared exactly). Outputs that a kernel accumulates into
//! (atomics, scatters) start from the same random values on both sides. Each output is compared
//! by its [`Tol`]: the float tolerance of [`exec::compare`] by default (results computed in
//! another order, such as sums and float atomics), exactly (integers and bools always, and the
//! float ops the GPU computes exactly), or within some ulps (approximate transcendentals). The
//! cases are the table [`CASES`]; the sources are embedded in the binary, so the command runs
//! from any directory.
//!
//! `--interp-only` runs the table on the interpreter alone (no GPU): each case must run and
//! write every poisoned element (a check of the table and of the kernels' coverage, not of
//! their values).

use crate::device::Runtime;
use crate::exec::{self, Rng, try_random_tensor};
use std::time::Instant;
use tessera_compiler::interp::Arg;
use tessera_compiler::tir::{Dim, ParamKind};
use tessera_compiler::{Codegen, CompiledKernel, ConstValue, DType, HostTensor, Options, Scalar, Source, Target};

pub mod inputs;

/// The example sources and the conformance programs (`tests/ops`, named `ops/…`), embedded.
const EXAMPLES: &[(&str, &str)] = &[
    ("vector_add.tile", include_str!("../../examples/vector_add.tile")),
    ("dropout.tile", include_str!("../../examples/dropout.tile")),
    ("matmul.tile", include_str!("../../examples/matmul.tile")),
    ("matmul_persistent.tile", include_str!("../../examples/matmul_persistent.tile")),
    ("matmul_splitk.tile", include_str!("../../examples/matmul_splitk.tile")),
    ("softmax.tile", include_str!("../../examples/softmax.tile")),
    ("linear.tile", include_str!("../../examples/linear.tile")),
    ("layernorm.tile", include_str!("../../examples/layernorm.tile")),
    ("layernorm_bwd.tile", include_str!("../../examples/layernorm_bwd.tile")),
    ("attention_bwd.tile", include_str!("../../examples/attention_bwd.tile")),
    ("linear_bwd.tile", include_str!("../../examples/linear_bwd.tile")),
    ("na3d.tile", include_str!("../../examples/na3d.tile")),
    ("na3d_bwd.tile", include_str!("../../examples/na3d_bwd.tile")),
    ("attention.tile", include_str!("../../examples/attention.tile")),
    ("na1d.tile", include_str!("../../examples/na1d.tile")),
    ("na2d.tile", include_str!("../../examples/na2d.tile")),
    ("na2d_stream.tile", include_str!("../../examples/na2d_stream.tile")),
    ("na2d_bwd.tile", include_str!("../../examples/na2d_bwd.tile")),
    ("na1d_bwd.tile", include_str!("../../examples/na1d_bwd.tile")),
    ("spmm_csr.tile", include_str!("../../examples/spmm_csr.tile")),
    ("gat.tile", include_str!("../../examples/gat.tile")),
    ("gat_bwd.tile", include_str!("../../examples/gat_bwd.tile")),
    ("rgat.tile", include_str!("../../examples/rgat.tile")),
    ("rgat_bwd.tile", include_str!("../../examples/rgat_bwd.tile")),
    ("hgt_bwd.tile", include_str!("../../examples/hgt_bwd.tile")),
    ("hgt.tile", include_str!("../../examples/hgt.tile")),
    ("rgcn.tile", include_str!("../../examples/rgcn.tile")),
    ("embedding_bag_bwd.tile", include_str!("../../examples/embedding_bag_bwd.tile")),
    ("ops/math.tile", include_str!("../../tests/ops/math.tile")),
    ("ops/arith.tile", include_str!("../../tests/ops/arith.tile")),
    ("ops/intops.tile", include_str!("../../tests/ops/intops.tile")),
    ("ops/casts.tile", include_str!("../../tests/ops/casts.tile")),
    ("ops/window.tile", include_str!("../../tests/ops/window.tile")),
    ("ops/gather_scatter.tile", include_str!("../../tests/ops/gather_scatter.tile")),
    ("ops/atomics.tile", include_str!("../../tests/ops/atomics.tile")),
    ("ops/indexed.tile", include_str!("../../tests/ops/indexed.tile")),
    ("ops/masked_softmax.tile", include_str!("../../tests/ops/masked_softmax.tile")),
    ("ops/argscan.tile", include_str!("../../tests/ops/argscan.tile")),
    ("ops/pick.tile", include_str!("../../tests/ops/pick.tile")),
    ("ops/random.tile", include_str!("../../tests/ops/random.tile")),
    ("ops/scan.tile", include_str!("../../tests/ops/scan.tile")),
    ("ops/scan_fn.tile", include_str!("../../tests/ops/scan_fn.tile")),
    ("ops/segment.tile", include_str!("../../tests/ops/segment.tile")),
    ("ops/loops.tile", include_str!("../../tests/ops/loops.tile")),
    ("ops/exits.tile", include_str!("../../tests/ops/exits.tile")),
    ("ops/dot_wide.tile", include_str!("../../tests/ops/dot_wide.tile")),
    ("ops/dot_trans.tile", include_str!("../../tests/ops/dot_trans.tile")),
    ("ops/convert.tile", include_str!("../../tests/ops/convert.tile")),
    ("ops/epilogue.tile", include_str!("../../tests/ops/epilogue.tile")),
    ("ops/convert_warp.tile", include_str!("../../tests/ops/convert_warp.tile")),
    ("ops/order.tile", include_str!("../../tests/ops/order.tile")),
];

/// Sizes of dimension symbols and values of integer consts, by name, as a generator sees them.
pub type Sizes = [(String, usize)];

/// Builds related input tensors (a CSR structure, RGCN edge tiles, index tensors) from the
/// case's sizes; every tensor parameter not built here gets random values.
pub type Generator = fn(&Sizes, &mut Rng) -> Result<Vec<(&'static str, HostTensor)>, String>;

/// How an output (`&mut`) tensor starts and is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Out {
    /// Written whole by the kernel: poisoned on both sides, compared.
    Poisoned,
    /// Accumulated into (atomics): the same random start on both sides, compared with tolerance.
    Accumulated,
}

/// How an output is compared with the interpreter's. Integer and bool outputs are always
/// compared exactly; NaN never passes (programs that produce NaN on purpose store a flag and a
/// cleaned value instead), and an infinity only matches the same infinity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tol {
    /// The `--check` tolerance of the dtype ([`exec::tolerance`]): results computed in another
    /// order (sums, dots, float atomics).
    Dtype,
    /// Equal values: what the GPU computes exactly (IEEE `+ - * /`, `sqrt`, `fma`, rounding
    /// casts, `floor`, …) and everything moved without arithmetic.
    Exact,
    /// `|gpu - interpreter| <= atol + ulps · ulp(interpreter)`, `ulp(x)` the spacing of the
    /// output's dtype at `x`: the GPU's approximate transcendentals (`ex2.approx` and the
    /// others) against the interpreter's correctly rounded values.
    Ulps { ulps: f64, atol: f64 },
}

/// One self-test case: a kernel of an example, its consts, its sizes and its inputs.
#[derive(Clone, Debug)]
pub struct Case {
    /// Shown in the report and matched by the filter.
    pub name: &'static str,
    /// The example file (in `examples/`).
    pub file: &'static str,
    pub consts: &'static [(&'static str, ConstValue)],
    /// Sizes of dimension symbols not fixed by generated tensors.
    pub dims: &'static [(&'static str, usize)],
    /// Scalar parameters.
    pub scalars: &'static [(&'static str, f64)],
    /// Builds some inputs; the other read-only tensors are random.
    pub generate: Option<Generator>,
    /// The output tensors and how they start; every one is compared.
    pub outputs: &'static [(&'static str, Out)],
    /// How outputs are compared, by name (`"*"`: every other output); [`Tol::Dtype`] by default.
    pub tols: &'static [(&'static str, Tol)],
    /// Built with `Options::tf32` (f32 dots on the tensor cores).
    pub tf32: bool,
    /// The kernel, in a file that has several; `None`: the file's first.
    pub kernel: Option<&'static str>,
    /// Built with `Options::warp_specialize` on (a producer warpgroup issues the main loop's
    /// bulk tensor copies, sm_90a).
    pub warp_specialize: bool,
    /// Built with `Options::warps` (the kernel's `#[warps]` when `None`).
    pub warps: Option<u32>,
}

impl Case {
    /// The comparison of output `name`.
    pub fn tol(&self, name: &str) -> Tol {
        let find = |n: &str| self.tols.iter().find(|(x, _)| *x == n).map(|(_, t)| *t);
        find(name).or_else(|| find("*")).unwrap_or(Tol::Dtype)
    }
}

const fn i(v: i64) -> ConstValue {
    ConstValue::Int(v)
}

const fn b(v: bool) -> ConstValue {
    ConstValue::Bool(v)
}

const P: Out = Out::Poisoned;
const A: Out = Out::Accumulated;

/// A case without generated inputs.
const fn c(
    name: &'static str,
    file: &'static str,
    consts: &'static [(&'static str, ConstValue)],
    dims: &'static [(&'static str, usize)],
    scalars: &'static [(&'static str, f64)],
    outputs: &'static [(&'static str, Out)],
) -> Case {
    Case {
        name,
        file,
        consts,
        dims,
        scalars,
        generate: None,
        outputs,
        tols: &[],
        tf32: false,
        kernel: None,
        warp_specialize: false,
        warps: None,
    }
}

/// The attention-training kernels' blocks for the self-test: 32 queries, 64 keys, D 64.
const ATT_BWD: &[(&str, ConstValue)] = &[("D", i(64)), ("BQ", i(32)), ("BK", i(64))];
const ATT_BWD_CAUSAL: &[(&str, ConstValue)] = &[("D", i(64)), ("BQ", i(32)), ("BK", i(64)), ("CAUSAL", ConstValue::Bool(true))];

/// The fused backward's `dq_acc` is f32, but its shares are products of `dS` rounded to bf16
/// (as the tensor cores take it), so one ulp of difference in a `dS` element moves a share by
/// 2⁻⁸ of itself: compared at bf16's `--check` tolerance (1.6e-2 relative ≈ 2¹⁷ f32 ulps).
const DQ_ACC_TOL: &[(&str, Tol)] = &[("dq_acc", Tol::Ulps { ulps: 131072.0, atol: 1e-2 }), ("*", Tol::Dtype)];

/// The NA-3D training kernels' windows for the self-test: 3 × 5 × 7, and 3 × 3 × 3 with a
/// dilation of 2 along x and causal z and y.
const NA3D_BWD: &[(&str, ConstValue)] = &[("KZ", i(3)), ("KX", i(5)), ("KY", i(7)), ("WX", i(8))];
const NA3D_BWD_CAUSAL: &[(&str, ConstValue)] = &[
    ("KZ", i(3)),
    ("KX", i(3)),
    ("KY", i(3)),
    ("DX", i(2)),
    ("WX", i(10)),
    ("CZ", ConstValue::Bool(true)),
    ("CY", ConstValue::Bool(true)),
];

/// NA-2D training with a kernel of 7 (the default key band holds 16 rows for 13).
const NA2D_BWD_K7: &[(&str, ConstValue)] = &[("KS", i(7)), ("WX", i(10))];

/// A case of `na2d_bwd.tile` on `[1, H, X, Y, 64]` tensors (dims `H, X, Y`).
const fn na2d_bwd_case(
    name: &'static str,
    consts: &'static [(&'static str, ConstValue)],
    dims: &'static [(&'static str, usize)],
    outs: &'static [(&'static str, Out)],
) -> Case {
    c(name, "na2d_bwd.tile", consts, dims, &[("scale", 0.125)], outs)
}

/// An NA-1D training case (`na1d_bwd.tile`) with the scale every kernel of it takes but delta.
const fn na1d_bwd_case(
    name: &'static str,
    consts: &'static [(&'static str, ConstValue)],
    dims: &'static [(&'static str, usize)],
    outs: &'static [(&'static str, Out)],
) -> Case {
    c(name, "na1d_bwd.tile", consts, dims, &[("scale", 0.125)], outs)
}

/// An NA-2D backward window with per-axis sizes: 5 × 3, a dilation of 2 along Y, causal along X.
const NA2D_BWD_AXES: &[(&str, ConstValue)] = &[("KX", i(5)), ("KY", i(3)), ("DY", i(2)), ("CX", ConstValue::Bool(true))];

const X: Tol = Tol::Exact;
const D: Tol = Tol::Dtype;

/// A conformance case (`tests/ops/FILE`): generated inputs, every output exact unless `tols`
/// says otherwise.
const fn op(
    name: &'static str,
    file: &'static str,
    consts: &'static [(&'static str, ConstValue)],
    dims: &'static [(&'static str, usize)],
    generate: Generator,
    outputs: &'static [(&'static str, Out)],
    tols: &'static [(&'static str, Tol)],
) -> Case {
    Case {
        name,
        file,
        consts,
        dims,
        scalars: &[],
        generate: Some(generate),
        outputs,
        tols,
        tf32: false,
        kernel: None,
        warp_specialize: false,
        warps: None,
    }
}

/// The outputs of `dot_wide.tile`, all poisoned.
const DOT_WIDE_OUT: &[(&str, Out)] = &[("ci", P), ("cti", P), ("cf", P), ("ctf", P)];

/// The outputs of `order.tile`: `a` is accumulated into by atomics.
const ORDER_OUT: &[(&str, Out)] = &[("y", P), ("w", P), ("a", A), ("s", P)];

/// The outputs of `convert.tile`, all poisoned and exact (values moved, maxima, integer sums).
const CONVERT_OUT: &[(&str, Out)] = &[("of", P), ("oi", P), ("od", P), ("oh", P), ("ob", P), ("ow", P), ("ot", P)];

/// The outputs of `math.tile`, all poisoned.
const MATH_OUT: &[(&str, Out)] = &[
    ("e", P),
    ("e2", P),
    ("lg", P),
    ("lg2", P),
    ("sq", P),
    ("rs", P),
    ("sn", P),
    ("cs", P),
    ("th", P),
    ("sg", P),
    ("ef", P),
    ("fl", P),
    ("ce", P),
    ("ab", P),
];

/// Tolerances of `math.tile`: the GPU's fast approximations (PTX `ex2.approx`, `lg2.approx`,
/// `rsqrt.approx`, `sin.approx`, `cos.approx`, on which `exp`, `log`, `tanh`, `sigmoid` and `erf`
/// are built) against the interpreter's correctly rounded values. `exp2` (2 ulp documented) and
/// `rsqrt` (1 ulp) get twice their bound. `exp(x)` is `ex2.approx(x · log2 e)`: rounding the
/// product costs about `1.2·|x|` ulp more (CUDA's bound for `__expf` is `2 + 1.2·|x|` ulp), so
/// 20 ulp for `|x| < 10` (`sigmoid`, `1 / (1 + exp(-x))` with `|x| < 12`, likewise); `log2`/`log`
/// and `sin`/`cos` have absolute bounds near their zeros (2^-22 and 2^-20.9); `tanh`
/// (`1 - 2 / (e^2|x| + 1)`) loses about an ulp of 1 to cancellation near 0; `erf` is
/// Abramowitz–Stegun 7.1.26 (1.5e-7) and a few ulps of 1 from `1 - p·e^-x²`. Measured on an
/// H100 (1000 inputs): `exp` 14 ulp, `exp2` 2, `rsqrt` 1, `sigmoid` 13; absolute `sin` 3.3e-7,
/// `cos` 3.6e-7, `tanh` 1e-7, `erf` 4.5e-7.
const MATH_TOL: &[(&str, Tol)] = &[
    ("e", Tol::Ulps { ulps: 20.0, atol: 0.0 }),
    ("e2", Tol::Ulps { ulps: 4.0, atol: 0.0 }),
    ("lg", Tol::Ulps { ulps: 4.0, atol: 5e-7 }),
    ("lg2", Tol::Ulps { ulps: 4.0, atol: 5e-7 }),
    ("rs", Tol::Ulps { ulps: 2.0, atol: 0.0 }),
    ("sn", Tol::Ulps { ulps: 2.0, atol: 1e-6 }),
    ("cs", Tol::Ulps { ulps: 2.0, atol: 1e-6 }),
    ("th", Tol::Ulps { ulps: 4.0, atol: 5e-7 }),
    ("sg", Tol::Ulps { ulps: 20.0, atol: 0.0 }),
    ("ef", Tol::Ulps { ulps: 4.0, atol: 1e-6 }),
    ("*", X),
];

const ARITH_OUT: &[(&str, Out)] = &[("cmp", P), ("f", P), ("hb", P), ("hf", P), ("nan", P)];
const INTOPS_OUT: &[(&str, Out)] = &[("o32", P), ("ou32", P), ("o8", P), ("ou8", P), ("lt", P), ("o64", P)];
const CASTS_OUT: &[(&str, Out)] = &[("f", P), ("hb", P), ("hf", P), ("i", P), ("s8", P), ("u8s", P), ("z", P), ("nan", P)];
const WINDOW_OUT: &[(&str, Out)] = &[("ld", P), ("st", P), ("st1", P), ("rv", P), ("lv", P), ("sc", P)];
const GATHER_OUT: &[(&str, Out)] = &[("g1", P), ("g2", P), ("g3", P), ("s1", A), ("s2", P), ("s3", P)];
const ATOMICS_OUT: &[(&str, Out)] =
    &[("ia", A), ("imx", A), ("imn", A), ("umx", A), ("umn", A), ("la", A), ("fa", A), ("fmx", A), ("fmn", A), ("cnt", A)];
const INDEXED_OUT: &[(&str, Out)] = &[("out", P), ("hist", A), ("fsum", A), ("big", A), ("fmax", A), ("umin", A), ("dsum", A)];
const SOFTMAX_OUT: &[(&str, Out)] = &[("p", P), ("l", P), ("m", P), ("o", P), ("sm", P)];
/// `p` is one `ex2.approx` of an exact difference; `l`, `o` and `sm` are sums of them in
/// another order; `m` is a maximum.
const SOFTMAX_TOL: &[(&str, Tol)] = &[("p", Tol::Ulps { ulps: 4.0, atol: 0.0 }), ("m", X), ("*", D)];
const ARGSCAN_OUT: &[(&str, Out)] = &[
    ("am", P),
    ("an", P),
    ("col", P),
    ("cm", P),
    ("cmn", P),
    ("iam", P),
    ("ian", P),
    ("ics", P),
    ("icm", P),
    ("ucm", P),
    ("bcs", P),
    ("jn", P),
    ("sp", P),
];
const SCAN_OUT: &[(&str, Out)] =
    &[("cs", P), ("cm", P), ("am", P), ("an", P), ("col_arg", P), ("pair", P), ("cp", P), ("cn", P), ("kd", P), ("ka", P)];

/// `case` built with `Options::warp_specialize` on.
const fn ws(case: Case) -> Case {
    Case { warp_specialize: true, ..case }
}

/// `case` warp-specialised on 8 warps: two consumer warpgroups taking turns (ping-pong).
const fn pingpong(case: Case) -> Case {
    Case { warps: Some(8), ..ws(case) }
}

/// The table of cases. Sizes are modest: the interpreter is the slow side.
pub const CASES: &[Case] = &[
    c("vector_add N=1000", "vector_add.tile", &[], &[("N", 1000)], &[], &[("z", P)]),
    c("vector_add N=1", "vector_add.tile", &[], &[("N", 1)], &[], &[("z", P)]),
    c("vector_add N=1025", "vector_add.tile", &[], &[("N", 1025)], &[], &[("z", P)]),
    c("matmul 130x67x45", "matmul.tile", &[], &[("M", 130), ("N", 67), ("K", 45)], &[], &[("c", P)]),
    c("matmul 1x1x1", "matmul.tile", &[], &[("M", 1), ("N", 1), ("K", 1)], &[], &[("c", P)]),
    // Window reductions: partial tiles on every edge, K not a multiple of a slice, empty slices.
    c("matmul_splitk 130x67x300", "matmul_splitk.tile", &[], &[("M", 130), ("N", 67), ("K", 300)], &[], &[("c", A)]),
    c("matmul_splitk 1x1x1", "matmul_splitk.tile", &[], &[("M", 1), ("N", 1), ("K", 1)], &[], &[("c", A)]),
    c(
        "matmul 33x70x100 BM=32 BN=64 BK=32",
        "matmul.tile",
        &[("BM", i(32)), ("BN", i(64)), ("BK", i(32))],
        &[("M", 33), ("N", 70), ("K", 100)],
        &[],
        &[("c", P)],
    ),
    // Rows of a multiple of 16 bytes: the copy engine's path on sm_90a (the sizes above take
    // its element-by-element fallback), with partial tiles on every edge and K not a multiple of
    // the tile; BK=128 makes A's rows two 128-byte column blocks, BN=256 B's four.
    c("matmul tma 136x200x72", "matmul.tile", &[], &[("M", 136), ("N", 200), ("K", 72)], &[], &[("c", P)]),
    c(
        "matmul tma 72x264x200 BM=64 BN=128 BK=128",
        "matmul.tile",
        &[("BM", i(64)), ("BN", i(128)), ("BK", i(128))],
        &[("M", 72), ("N", 264), ("K", 200)],
        &[],
        &[("c", P)],
    ),
    c(
        "matmul tma 72x264x200 BM=64 BN=256 BK=64",
        "matmul.tile",
        &[("BM", i(64)), ("BN", i(256)), ("BK", i(64))],
        &[("M", 72), ("N", 264), ("K", 200)],
        &[],
        &[("c", P)],
    ),
    // The persistent loop: few programs, several tiles each (partial on every edge), K not a
    // multiple of the tile, K of 1 and 0 (the tile is still stored), the copy engine's path.
    c(
        "matmul_persistent 130x67x45 NSM=3",
        "matmul_persistent.tile",
        &[("NSM", i(3))],
        &[("M", 130), ("N", 67), ("K", 45)],
        &[],
        &[("c", P)],
    ),
    // Warp-specialised persistent GEMM: the producer runs into the next tile's K blocks while
    // the consumers store the last tile (several tiles per program, partial edges, the
    // producer's element-by-element fallback at K 45, K 0).
    ws(c(
        "matmul_persistent ws tma 136x520x200 NSM=2",
        "matmul_persistent.tile",
        &[("NSM", i(2))],
        &[("M", 136), ("N", 520), ("K", 200)],
        &[],
        &[("c", P)],
    )),
    ws(c(
        "matmul_persistent ws 130x67x45 NSM=3",
        "matmul_persistent.tile",
        &[("NSM", i(3))],
        &[("M", 130), ("N", 67), ("K", 45)],
        &[],
        &[("c", P)],
    )),
    ws(c(
        "matmul_persistent ws 70x70x0 NSM=2",
        "matmul_persistent.tile",
        &[("NSM", i(2))],
        &[("M", 70), ("N", 70), ("K", 0)],
        &[],
        &[("c", P)],
    )),
    c(
        "matmul_persistent tma 136x520x200 NSM=2",
        "matmul_persistent.tile",
        &[("NSM", i(2))],
        &[("M", 136), ("N", 520), ("K", 200)],
        &[],
        &[("c", P)],
    ),
    c(
        "matmul_persistent tma 200x264x72 BM=64 BN=128 BK=32 NSM=5",
        "matmul_persistent.tile",
        &[("BM", i(64)), ("BN", i(128)), ("BK", i(32)), ("NSM", i(5))],
        &[("M", 200), ("N", 264), ("K", 72)],
        &[],
        &[("c", P)],
    ),
    c("matmul_persistent 77x300x1 NSM=2", "matmul_persistent.tile", &[("NSM", i(2))], &[("M", 77), ("N", 300), ("K", 1)], &[], &[("c", P)]),
    c("matmul_persistent 70x90x0 NSM=2", "matmul_persistent.tile", &[("NSM", i(2))], &[("M", 70), ("N", 90), ("K", 0)], &[], &[("c", P)]),
    // The mask from `std::random` bit for bit, the kept elements' scaling exact; a partial block.
    Case {
        tols: &[("*", X)],
        ..c("dropout N=3000 p=0.3", "dropout.tile", &[], &[("N", 3000)], &[("p", 0.3), ("seed", -7.0)], &[("y", P)])
    },
    c("softmax 37x1000", "softmax.tile", &[], &[("R", 37), ("C", 1000)], &[], &[("y", P)]),
    c("softmax 1x1", "softmax.tile", &[], &[("R", 1), ("C", 1)], &[], &[("y", P)]),
    c("linear gelu 130x77x45", "linear.tile", &[("ACT", i(1)), ("GROUP", i(3))], &[("M", 130), ("N", 77), ("K", 45)], &[], &[("y", P)]),
    c(
        "linear silu 70x129x33 BM=32 BN=32 BK=16",
        "linear.tile",
        &[("ACT", i(2)), ("BM", i(32)), ("BN", i(32)), ("BK", i(16)), ("GROUP", i(2))],
        &[("M", 70), ("N", 129), ("K", 33)],
        &[],
        &[("y", P)],
    ),
    c("linear gelu tma 136x200x72", "linear.tile", &[("ACT", i(1))], &[("M", 136), ("N", 200), ("K", 72)], &[], &[("y", P)]),
    c("linear none 1x1x1", "linear.tile", &[("ACT", i(0))], &[("M", 1), ("N", 1), ("K", 1)], &[], &[("y", P)]),
    c("layernorm 37x1000", "layernorm.tile", &[], &[("R", 37), ("C", 1000)], &[("eps", 1e-5)], &[("y", P)]),
    c("layernorm 1x1", "layernorm.tile", &[], &[("R", 1), ("C", 1)], &[("eps", 1e-5)], &[("y", P)]),
    c("layernorm 6x7 BR=8 BC=8", "layernorm.tile", &[("BR", i(8)), ("BC", i(8))], &[("R", 6), ("C", 7)], &[("eps", 1e-3)], &[("y", P)]),
    // Programs that stop early (R 37 over blocks of 4 rows, 2 per program) and one column.
    c(
        "layernorm_bwd 37x1000 RPP=2",
        "layernorm_bwd.tile",
        &[("RPP", i(2))],
        &[("R", 37), ("C", 1000)],
        &[("eps", 1e-5)],
        &[("dx", P), ("dw", A), ("db", A)],
    ),
    // Attention training, each kernel on random inputs (random `lse` and `delta` too: the GPU and
    // the interpreter see the same ones), S 77 over blocks of 32 and 64, D 64.
    Case {
        kernel: Some("attention_fwd"),
        ..c(
            "attention_fwd S77 D64",
            "attention_bwd.tile",
            ATT_BWD,
            &[("B", 1), ("H", 2), ("S", 77)],
            &[("scale", 0.125)],
            &[("o", P), ("lse", P)],
        )
    },
    Case {
        kernel: Some("attention_fwd"),
        ..c(
            "attention_fwd S77 D64 causal",
            "attention_bwd.tile",
            ATT_BWD_CAUSAL,
            &[("B", 1), ("H", 2), ("S", 77)],
            &[("scale", 0.125)],
            &[("o", P), ("lse", P)],
        )
    },
    Case {
        kernel: Some("attention_bwd_delta"),
        ..c("attention_bwd_delta S77 D64", "attention_bwd.tile", &[("D", i(64))], &[("B", 1), ("H", 2), ("S", 77)], &[], &[("delta", P)])
    },
    Case {
        kernel: Some("attention_bwd_dkdv"),
        ..c(
            "attention_bwd_dkdv S77 D64",
            "attention_bwd.tile",
            ATT_BWD,
            &[("B", 1), ("H", 2), ("S", 77)],
            &[("scale", 0.125)],
            &[("dk", P), ("dv", P)],
        )
    },
    Case {
        kernel: Some("attention_bwd_dkdv"),
        ..c(
            "attention_bwd_dkdv S77 D64 causal",
            "attention_bwd.tile",
            ATT_BWD_CAUSAL,
            &[("B", 1), ("H", 2), ("S", 77)],
            &[("scale", 0.125)],
            &[("dk", P), ("dv", P)],
        )
    },
    // The default blocks (two warpgroups of wgmma), causal and not, S not a multiple of them.
    Case {
        kernel: Some("attention_bwd_dkdv"),
        ..c(
            "attention_bwd_dkdv S200 D64 defaults",
            "attention_bwd.tile",
            &[],
            &[("B", 1), ("H", 2), ("S", 200)],
            &[("scale", 0.125)],
            &[("dk", P), ("dv", P)],
        )
    },
    Case {
        kernel: Some("attention_bwd_dkdv"),
        ..c(
            "attention_bwd_dkdv S200 D128 causal defaults",
            "attention_bwd.tile",
            &[("D", i(128)), ("CAUSAL", ConstValue::Bool(true))],
            &[("B", 1), ("H", 1), ("S", 200)],
            &[("scale", 0.088)],
            &[("dk", P), ("dv", P)],
        )
    },
    // The one-pass backward: dQ's shares added into `dq_acc` by window reductions (the copy
    // engine's on sm_90a), at small blocks and the defaults, causal and not, D 64 and 128.
    Case {
        kernel: Some("attention_bwd_fused"),
        tols: DQ_ACC_TOL,
        ..c(
            "attention_bwd_fused S77 D64 causal",
            "attention_bwd.tile",
            ATT_BWD_CAUSAL,
            &[("B", 1), ("H", 2), ("S", 77)],
            &[("scale", 0.125)],
            &[("dk", P), ("dv", P), ("dq_acc", A)],
        )
    },
    Case {
        kernel: Some("attention_bwd_fused"),
        tols: DQ_ACC_TOL,
        ..c(
            "attention_bwd_fused S200 D64 defaults",
            "attention_bwd.tile",
            &[],
            &[("B", 1), ("H", 2), ("S", 200)],
            &[("scale", 0.125)],
            &[("dk", P), ("dv", P), ("dq_acc", A)],
        )
    },
    Case {
        kernel: Some("attention_bwd_fused"),
        tols: DQ_ACC_TOL,
        ..c(
            "attention_bwd_fused S200 D128 causal defaults",
            "attention_bwd.tile",
            &[("D", i(128)), ("CAUSAL", ConstValue::Bool(true))],
            &[("B", 1), ("H", 1), ("S", 200)],
            &[("scale", 0.088)],
            &[("dk", P), ("dv", P), ("dq_acc", A)],
        )
    },
    Case {
        kernel: Some("attention_bwd_dq_convert"),
        ..c(
            "attention_bwd_dq_convert S77 D64",
            "attention_bwd.tile",
            &[],
            &[("B", 1), ("H", 2), ("S", 77)],
            &[("scale", 0.125)],
            &[("dq", P)],
        )
    },
    Case {
        kernel: Some("attention_bwd_dq"),
        ..c(
            "attention_bwd_dq S200 D64 defaults",
            "attention_bwd.tile",
            &[],
            &[("B", 1), ("H", 2), ("S", 200)],
            &[("scale", 0.125)],
            &[("dq", P)],
        )
    },
    Case {
        kernel: Some("attention_bwd_dq"),
        ..c(
            "attention_bwd_dq S200 D128 causal defaults",
            "attention_bwd.tile",
            &[("D", i(128)), ("CAUSAL", ConstValue::Bool(true))],
            &[("B", 1), ("H", 1), ("S", 200)],
            &[("scale", 0.088)],
            &[("dq", P)],
        )
    },
    Case {
        kernel: Some("attention_bwd_dq"),
        ..c("attention_bwd_dq S77 D64", "attention_bwd.tile", ATT_BWD, &[("B", 1), ("H", 2), ("S", 77)], &[("scale", 0.125)], &[("dq", P)])
    },
    Case {
        kernel: Some("attention_bwd_dq"),
        ..c(
            "attention_bwd_dq S77 D64 causal",
            "attention_bwd.tile",
            ATT_BWD_CAUSAL,
            &[("B", 1), ("H", 2), ("S", 77)],
            &[("scale", 0.125)],
            &[("dq", P)],
        )
    },
    // Linear + GELU for training at sizes with partial tiles on every edge.
    Case {
        kernel: Some("linear_fwd"),
        ..c("linear_fwd 257x300x96", "linear_bwd.tile", &[], &[("M", 257), ("N", 300), ("K", 96)], &[], &[("y", P), ("z", P)])
    },
    Case {
        kernel: Some("linear_bwd_dz"),
        ..c("linear_bwd_dz 257x300", "linear_bwd.tile", &[], &[("M", 257), ("N", 300)], &[], &[("dz", P), ("dbias", A)])
    },
    Case {
        kernel: Some("linear_bwd_dx"),
        ..c("linear_bwd_dx 257x300x96", "linear_bwd.tile", &[], &[("M", 257), ("N", 300), ("K", 96)], &[], &[("dx", P)])
    },
    Case {
        kernel: Some("linear_bwd_dw"),
        ..c("linear_bwd_dw 257x300x96", "linear_bwd.tile", &[], &[("M", 257), ("N", 300), ("K", 96)], &[], &[("dw", P)])
    },
    // NA-3D: partial patches on every edge; a dilation and causal axes.
    c(
        "na3d 5x9x12 k3x5x7",
        "na3d.tile",
        &[("KZ", i(3)), ("KX", i(5)), ("KY", i(7)), ("WX", i(8))],
        &[("B", 1), ("H", 2), ("Z", 5), ("X", 9), ("Y", 12)],
        &[("scale", 0.125)],
        &[("o", P)],
    ),
    c(
        "na3d 4x11x9 k3x5x3 dil x2 causal z,y",
        "na3d.tile",
        &[
            ("KZ", i(3)),
            ("KX", i(5)),
            ("KY", i(3)),
            ("DX", i(2)),
            ("WX", i(12)),
            ("CZ", ConstValue::Bool(true)),
            ("CY", ConstValue::Bool(true)),
        ],
        &[("B", 1), ("H", 2), ("Z", 4), ("X", 11), ("Y", 9)],
        &[("scale", 0.125)],
        &[("o", P)],
    ),
    // NA-3D training: partial patches on every edge; a dilation and causal axes.
    Case {
        kernel: Some("na3d_fwd"),
        ..c(
            "na3d_fwd 4x9x12 k3x5x7",
            "na3d_bwd.tile",
            NA3D_BWD,
            &[("B", 1), ("H", 2), ("Z", 4), ("X", 9), ("Y", 12)],
            &[("scale", 0.125)],
            &[("o", P), ("lse", P)],
        )
    },
    Case {
        kernel: Some("na3d_bwd_delta"),
        ..c("na3d_bwd_delta 4x9x12", "na3d_bwd.tile", &[], &[("B", 1), ("H", 2), ("Z", 4), ("X", 9), ("Y", 12)], &[], &[("delta", P)])
    },
    Case {
        kernel: Some("na3d_bwd_dq"),
        ..c(
            "na3d_bwd_dq 4x9x12 k3x5x7",
            "na3d_bwd.tile",
            NA3D_BWD,
            &[("B", 1), ("H", 2), ("Z", 4), ("X", 9), ("Y", 12)],
            &[("scale", 0.125)],
            &[("dq", P)],
        )
    },
    Case {
        kernel: Some("na3d_bwd_dkdv"),
        ..c(
            "na3d_bwd_dkdv 4x9x12 k3x5x7",
            "na3d_bwd.tile",
            NA3D_BWD,
            &[("B", 1), ("H", 2), ("Z", 4), ("X", 9), ("Y", 12)],
            &[("scale", 0.125)],
            &[("dk", P), ("dv", P)],
        )
    },
    Case {
        kernel: Some("na3d_bwd_dq"),
        ..c(
            "na3d_bwd_dq 3x11x9 k3x3x3 dil x2 causal z,y",
            "na3d_bwd.tile",
            NA3D_BWD_CAUSAL,
            &[("B", 1), ("H", 1), ("Z", 3), ("X", 11), ("Y", 9)],
            &[("scale", 0.125)],
            &[("dq", P)],
        )
    },
    Case {
        kernel: Some("na3d_bwd_dkdv"),
        ..c(
            "na3d_bwd_dkdv 3x11x9 k3x3x3 dil x2 causal z,y",
            "na3d_bwd.tile",
            NA3D_BWD_CAUSAL,
            &[("B", 1), ("H", 1), ("Z", 3), ("X", 11), ("Y", 9)],
            &[("scale", 0.125)],
            &[("dk", P), ("dv", P)],
        )
    },
    c("layernorm_bwd 5x1", "layernorm_bwd.tile", &[], &[("R", 5), ("C", 1)], &[("eps", 1e-5)], &[("dx", P), ("dw", A), ("db", A)]),
    c(
        "attention B1 H2 S77 D64 BQ32 BK16",
        "attention.tile",
        &[("D", i(64)), ("BQ", i(32)), ("BK", i(16))],
        &[("B", 1), ("H", 2), ("S", 77)],
        &[("scale", 0.125)],
        &[("o", P)],
    ),
    c(
        "attention causal B1 H2 S77 D64 BQ32 BK16",
        "attention.tile",
        &[("D", i(64)), ("BQ", i(32)), ("BK", i(16)), ("CAUSAL", b(true))],
        &[("B", 1), ("H", 2), ("S", 77)],
        &[("scale", 0.125)],
        &[("o", P)],
    ),
    c("attention B2 H1 S130 D128", "attention.tile", &[], &[("B", 2), ("H", 1), ("S", 130)], &[("scale", 0.088)], &[("o", P)]),
    c(
        "attention causal B1 H1 S130 D128",
        "attention.tile",
        &[("CAUSAL", b(true))],
        &[("B", 1), ("H", 1), ("S", 130)],
        &[("scale", 0.088)],
        &[("o", P)],
    ),
    c("attention S1 D128", "attention.tile", &[], &[("B", 1), ("H", 1), ("S", 1)], &[("scale", 0.088)], &[("o", P)]),
    c(
        "attention causal S1 D64",
        "attention.tile",
        &[("D", i(64)), ("CAUSAL", b(true))],
        &[("B", 1), ("H", 1), ("S", 1)],
        &[("scale", 0.125)],
        &[("o", P)],
    ),
    c(
        "attention causal B1 H1 S45 D128 BQ16 BK32",
        "attention.tile",
        &[("BQ", i(16)), ("BK", i(32)), ("CAUSAL", b(true))],
        &[("B", 1), ("H", 1), ("S", 45)],
        &[("scale", 0.088)],
        &[("o", P)],
    ),
    // Warp-specialised (a producer warpgroup issues the loop's bulk tensor copies): the copy
    // engine's path (rows of 16-byte multiples) with partial tiles on every edge and K not a
    // multiple of the tile, the producer's element-by-element fallback (K 45: rows the copy
    // engine cannot take), one element; attention with two pipelines in its loop, S 77 and 1.
    ws(c("matmul ws 136x200x72", "matmul.tile", &[], &[("M", 136), ("N", 200), ("K", 72)], &[], &[("c", P)])),
    ws(c("matmul ws 130x67x45", "matmul.tile", &[], &[("M", 130), ("N", 67), ("K", 45)], &[], &[("c", P)])),
    ws(c("matmul ws 1x1x1", "matmul.tile", &[], &[("M", 1), ("N", 1), ("K", 1)], &[], &[("c", P)])),
    ws(c("attention ws B2 H1 S77 D128", "attention.tile", &[], &[("B", 2), ("H", 1), ("S", 77)], &[("scale", 0.088)], &[("o", P)])),
    ws(c(
        "attention ws causal B1 H2 S77 D64",
        "attention.tile",
        &[("D", i(64)), ("CAUSAL", b(true))],
        &[("B", 1), ("H", 2), ("S", 77)],
        &[("scale", 0.125)],
        &[("o", P)],
    )),
    ws(c("attention ws S1 D128", "attention.tile", &[], &[("B", 1), ("H", 1), ("S", 1)], &[("scale", 0.088)], &[("o", P)])),
    // Two consumer warpgroups (8 warps, 128 queries) taking turns at the tensor cores.
    pingpong(c(
        "attention ws pingpong B1 H2 S200 D64 BQ128",
        "attention.tile",
        &[("D", i(64)), ("BQ", i(128))],
        &[("B", 1), ("H", 2), ("S", 200)],
        &[("scale", 0.125)],
        &[("o", P)],
    )),
    pingpong(c(
        "attention ws pingpong causal B1 H1 S77 D128 BQ128",
        "attention.tile",
        &[("BQ", i(128)), ("CAUSAL", b(true))],
        &[("B", 1), ("H", 1), ("S", 77)],
        &[("scale", 0.088)],
        &[("o", P)],
    )),
    // FlashAttention-3's full schedule: ping-pong and the loop rotated by `overlap_dots` (each
    // iteration issues its `S = Q·Kᵀ` and the previous iteration's `P·V` in one turn), over
    // several key blocks with a partial last one, causal or not, and S 1 (the loop runs once:
    // only the rotated loop's first and last parts).
    pingpong(c(
        "attention ws overlap B1 H2 S300 D128 BQ128 BK128",
        "attention.tile",
        &[("BQ", i(128)), ("BK", i(128))],
        &[("B", 1), ("H", 2), ("S", 300)],
        &[("scale", 0.088)],
        &[("o", P)],
    )),
    pingpong(c(
        "attention ws overlap causal B2 H1 S333 D64 BQ128 BK128",
        "attention.tile",
        &[("D", i(64)), ("BQ", i(128)), ("BK", i(128)), ("CAUSAL", b(true))],
        &[("B", 2), ("H", 1), ("S", 333)],
        &[("scale", 0.125)],
        &[("o", P)],
    )),
    pingpong(c(
        "attention ws overlap S1 D128 BQ128 BK128",
        "attention.tile",
        &[("BQ", i(128)), ("BK", i(128))],
        &[("B", 1), ("H", 1), ("S", 1)],
        &[("scale", 0.088)],
        &[("o", P)],
    )),
    c("na1d L100 KS7", "na1d.tile", &[], &[("B", 1), ("H", 2), ("L", 100)], &[("scale", 0.125)], &[("o", P)]),
    // NATTEN's causal windows and per-axis kernel sizes, dilations and causal flags.
    c(
        "na1d L53 KS5 DIL2 causal",
        "na1d.tile",
        &[("KS", i(5)), ("DIL", i(2)), ("TQ", i(16)), ("W", i(32)), ("CAUSAL", ConstValue::Bool(true))],
        &[("B", 1), ("H", 2), ("L", 53)],
        &[("scale", 0.125)],
        &[("o", P)],
    ),
    c(
        "na2d 13x10 k5x7 dx2 causal x",
        "na2d.tile",
        &[("KX", i(5)), ("KY", i(7)), ("DX", i(2)), ("CX", ConstValue::Bool(true))],
        &[("B", 1), ("H", 2), ("X", 13), ("Y", 10)],
        &[("scale", 0.125)],
        &[("o", P)],
    ),
    c(
        "na2d_stream 17x30 k7x5 dy2 causal x,y",
        "na2d_stream.tile",
        &[("KX", i(7)), ("KY", i(5)), ("DY", i(2)), ("RX", i(4)), ("CX", ConstValue::Bool(true)), ("CY", ConstValue::Bool(true))],
        &[("B", 1), ("H", 1), ("X", 17), ("Y", 30)],
        &[("scale", 0.125)],
        &[("o", P)],
    ),
    Case {
        kernel: Some("na2d_fwd"),
        ..na2d_bwd_case(
            "na2d_fwd 11x13 k5x3 dy2 causal x",
            NA2D_BWD_AXES,
            &[("B", 1), ("H", 1), ("X", 11), ("Y", 13)],
            &[("o", P), ("lse", P)],
        )
    },
    Case {
        kernel: Some("na2d_bwd_dq"),
        ..na2d_bwd_case("na2d_bwd_dq 11x13 k5x3 dy2 causal x", NA2D_BWD_AXES, &[("B", 1), ("H", 1), ("X", 11), ("Y", 13)], &[("dq", P)])
    },
    Case {
        kernel: Some("na2d_bwd_dkdv"),
        ..na2d_bwd_case(
            "na2d_bwd_dkdv 11x13 k5x3 dy2 causal x",
            NA2D_BWD_AXES,
            &[("B", 1), ("H", 1), ("X", 11), ("Y", 13)],
            &[("dk", P), ("dv", P)],
        )
    },
    c("na1d L=KS=7", "na1d.tile", &[], &[("B", 1), ("H", 1), ("L", 7)], &[("scale", 0.125)], &[("o", P)]),
    c(
        "na1d L53 KS5 DIL2 TQ16 W32",
        "na1d.tile",
        &[("KS", i(5)), ("DIL", i(2)), ("TQ", i(16)), ("W", i(32))],
        &[("B", 2), ("H", 1), ("L", 53)],
        &[("scale", 0.125)],
        &[("o", P)],
    ),
    c(
        "na1d L=KS·DIL=15 KS5 DIL3 D128 TQ16 W32",
        "na1d.tile",
        &[("KS", i(5)), ("DIL", i(3)), ("TQ", i(16)), ("W", i(32)), ("D", i(128))],
        &[("B", 1), ("H", 1), ("L", 15)],
        &[("scale", 0.1)],
        &[("o", P)],
    ),
    c(
        "na1d L1 KS1",
        "na1d.tile",
        &[("KS", i(1)), ("TQ", i(16)), ("W", i(16))],
        &[("B", 1), ("H", 1), ("L", 1)],
        &[("scale", 0.125)],
        &[("o", P)],
    ),
    c("na2d 11x20 KS7", "na2d.tile", &[], &[("B", 1), ("H", 2), ("X", 11), ("Y", 20)], &[("scale", 0.125)], &[("o", P)]),
    c("na2d X=Y=KS=7", "na2d.tile", &[], &[("B", 1), ("H", 1), ("X", 7), ("Y", 7)], &[("scale", 0.125)], &[("o", P)]),
    c(
        "na2d 13x10 KS5 DIL2",
        "na2d.tile",
        &[("KS", i(5)), ("DIL", i(2))],
        &[("B", 1), ("H", 1), ("X", 13), ("Y", 10)],
        &[("scale", 0.125)],
        &[("o", P)],
    ),
    // The streaming kernel: the window in bands (the last band past the patch), partial query
    // patches on both edges, bands with no key of some queries' windows.
    // NA-1D training, each kernel on random inputs (random `lse` and `delta` too): a partial
    // last block, dilation 2, a causal window, key blocks whose queries span several blocks.
    Case {
        kernel: Some("na1d_fwd"),
        ..na1d_bwd_case("na1d_fwd L100 KS7", &[], &[("B", 1), ("H", 2), ("L", 100)], &[("o", P), ("lse", P)])
    },
    Case {
        kernel: Some("na1d_bwd_delta"),
        ..c("na1d_bwd_delta L100", "na1d_bwd.tile", &[], &[("B", 1), ("H", 2), ("L", 100)], &[], &[("delta", P)])
    },
    Case { kernel: Some("na1d_bwd_dq"), ..na1d_bwd_case("na1d_bwd_dq L100 KS7", &[], &[("B", 1), ("H", 2), ("L", 100)], &[("dq", P)]) },
    Case {
        kernel: Some("na1d_bwd_dkdv"),
        ..na1d_bwd_case("na1d_bwd_dkdv L100 KS7", &[], &[("B", 1), ("H", 2), ("L", 100)], &[("dk", P), ("dv", P)])
    },
    Case {
        kernel: Some("na1d_bwd_dkdv"),
        ..na1d_bwd_case(
            "na1d_bwd_dkdv L53 KS5 DIL2 TK16",
            &[("KS", i(5)), ("DIL", i(2)), ("TK", i(16))],
            &[("B", 1), ("H", 1), ("L", 53)],
            &[("dk", P), ("dv", P)],
        )
    },
    Case {
        kernel: Some("na1d_bwd_dkdv"),
        ..na1d_bwd_case(
            "na1d_bwd_dkdv L77 KS13 causal",
            &[("KS", i(13)), ("CAUSAL", ConstValue::Bool(true))],
            &[("B", 1), ("H", 1), ("L", 77)],
            &[("dk", P), ("dv", P)],
        )
    },
    // NA-2D training: partial patches on both axes, the smallest extents, the default KS 13 with
    // key patches near every edge.
    Case {
        kernel: Some("na2d_fwd"),
        ..na2d_bwd_case("na2d_fwd 11x20 KS7", NA2D_BWD_K7, &[("B", 1), ("H", 2), ("X", 11), ("Y", 20)], &[("o", P), ("lse", P)])
    },
    Case {
        kernel: Some("na2d_bwd_delta"),
        ..c("na2d_bwd_delta 11x20", "na2d_bwd.tile", &[], &[("B", 1), ("H", 2), ("X", 11), ("Y", 20)], &[], &[("delta", P)])
    },
    Case {
        kernel: Some("na2d_bwd_dq"),
        ..na2d_bwd_case("na2d_bwd_dq 11x20 KS7", NA2D_BWD_K7, &[("B", 1), ("H", 2), ("X", 11), ("Y", 20)], &[("dq", P)])
    },
    Case {
        kernel: Some("na2d_bwd_dkdv"),
        ..na2d_bwd_case("na2d_bwd_dkdv 11x20 KS7", NA2D_BWD_K7, &[("B", 1), ("H", 2), ("X", 11), ("Y", 20)], &[("dk", P), ("dv", P)])
    },
    Case {
        kernel: Some("na2d_bwd_dkdv"),
        ..na2d_bwd_case("na2d_bwd_dkdv X=Y=KS=7", NA2D_BWD_K7, &[("B", 1), ("H", 1), ("X", 7), ("Y", 7)], &[("dk", P), ("dv", P)])
    },
    Case {
        kernel: Some("na2d_bwd_dq"),
        ..na2d_bwd_case("na2d_bwd_dq 29x35 KS13", &[], &[("B", 1), ("H", 1), ("X", 29), ("Y", 35)], &[("dq", P)])
    },
    Case {
        kernel: Some("na2d_bwd_dkdv"),
        ..na2d_bwd_case("na2d_bwd_dkdv 29x35 KS13", &[], &[("B", 1), ("H", 1), ("X", 29), ("Y", 35)], &[("dk", P), ("dv", P)])
    },
    c("na2d_stream 20x23 KS13", "na2d_stream.tile", &[], &[("B", 1), ("H", 2), ("X", 20), ("Y", 23)], &[("scale", 0.125)], &[("o", P)]),
    c(
        "na2d_stream 17x30 KS7 DIL2 RX4",
        "na2d_stream.tile",
        &[("KS", i(7)), ("DIL", i(2)), ("WX", i(16)), ("RX", i(4))],
        &[("B", 1), ("H", 1), ("X", 17), ("Y", 30)],
        &[("scale", 0.125)],
        &[("o", P)],
    ),
    c(
        "na2d_stream 13x13 KS13 D32 WX19",
        "na2d_stream.tile",
        &[("D", i(32)), ("WX", i(19)), ("RX", i(8))],
        &[("B", 2), ("H", 1), ("X", 13), ("Y", 13)],
        &[("scale", 0.3)],
        &[("o", P)],
    ),
    c(
        "na2d 5x9 KS3 D32 TX4 WX8",
        "na2d.tile",
        &[("KS", i(3)), ("D", i(32)), ("TX", i(4)), ("WX", i(8))],
        &[("B", 2), ("H", 1), ("X", 5), ("Y", 9)],
        &[("scale", 0.3)],
        &[("o", P)],
    ),
    Case {
        generate: Some(gen_spmm),
        ..c("spmm_csr R37 N50 E600 F70", "spmm_csr.tile", &[], &[("R", 37), ("N", 50), ("E", 600), ("F", 70)], &[], &[("y", P)])
    },
    // GAT: 3 heads of 10 features in tiles of 8 × 16; nodes without edges.
    Case {
        generate: Some(gen_gat),
        ..c("gat N50 E300 H3 F10", "gat.tile", &[], &[("N", 50), ("E", 300), ("H", 3), ("F", 10)], &[("slope", 0.2)], &[("out", P)])
    },
    Case {
        generate: Some(gen_gat),
        ..c("gat N1 E1 H8 F16", "gat.tile", &[], &[("N", 1), ("E", 1), ("H", 8), ("F", 16)], &[("slope", 0.2)], &[("out", P)])
    },
    Case {
        generate: Some(gen_rgat),
        ..c(
            "rgat N50 E300 R3 H3 F10",
            "rgat.tile",
            &[],
            &[("N", 50), ("E", 300), ("R", 3), ("H", 3), ("F", 10)],
            &[("slope", 0.2)],
            &[("out", P)],
        )
    },
    // GAT backward: dfeat and del are sums of atomic adds (any order) of terms the GPU computes
    // with `ex2.approx`; der is one program's sum.
    Case {
        generate: Some(gen_gat),
        tols: &[("*", Tol::Ulps { ulps: 4096.0, atol: 1e-4 })],
        ..c(
            "gat_bwd N50 E300 H3 F10",
            "gat_bwd.tile",
            &[],
            &[("N", 50), ("E", 300), ("H", 3), ("F", 10)],
            &[("slope", 0.2)],
            &[("dfeat", A), ("del", A), ("der", P)],
        )
    },
    // RGAT backward: every output a sum of atomic adds (dqd too: a node's edges of one relation).
    Case {
        generate: Some(gen_rgat),
        tols: &[("*", Tol::Ulps { ulps: 4096.0, atol: 1e-4 })],
        ..c(
            "rgat_bwd N50 E300 R3 H3 F10",
            "rgat_bwd.tile",
            &[],
            &[("N", 50), ("E", 300), ("R", 3), ("H", 3), ("F", 10)],
            &[("slope", 0.2)],
            &[("dfeat", A), ("dqd", A), ("dks", A)],
        )
    },
    Case {
        generate: Some(gen_rgat),
        tols: &[("*", Tol::Ulps { ulps: 4096.0, atol: 1e-4 })],
        ..c(
            "rgat_bwd N1 E1 R1 H8 F16",
            "rgat_bwd.tile",
            &[],
            &[("N", 1), ("E", 1), ("R", 1), ("H", 8), ("F", 16)],
            &[("slope", 0.2)],
            &[("dfeat", A), ("dqd", A), ("dks", A)],
        )
    },
    Case {
        generate: Some(gen_hgt),
        ..c(
            "hgt N50 M120 E300 H3 D10",
            "hgt.tile",
            &[],
            &[("N", 50), ("M", 120), ("E", 300), ("H", 3), ("D", 10)],
            &[("scale", 0.3)],
            &[("out", P)],
        )
    },
    // HGT backward: dk and dv are sums of atomic adds; dq and dprior one program's values.
    Case {
        generate: Some(gen_hgt),
        tols: &[("*", Tol::Ulps { ulps: 4096.0, atol: 1e-4 })],
        ..c(
            "hgt_bwd N50 M120 E300 H3 D10",
            "hgt_bwd.tile",
            &[],
            &[("N", 50), ("M", 120), ("E", 300), ("H", 3), ("D", 10)],
            &[("scale", 0.3)],
            &[("dq", P), ("dk", A), ("dv", A), ("dprior", P)],
        )
    },
    Case {
        generate: Some(gen_hgt),
        ..c("hgt N1 M1 E1 H8 D16", "hgt.tile", &[], &[("N", 1), ("M", 1), ("E", 1), ("H", 8), ("D", 16)], &[("scale", 0.25)], &[("out", P)])
    },
    Case {
        generate: Some(gen_rgat),
        ..c(
            "rgat N1 E1 R1 H8 F16",
            "rgat.tile",
            &[],
            &[("N", 1), ("E", 1), ("R", 1), ("H", 8), ("F", 16)],
            &[("slope", 0.2)],
            &[("out", P)],
        )
    },
    Case {
        generate: Some(gen_spmm),
        ..c("spmm_csr R1 N1 E1 F1", "spmm_csr.tile", &[], &[("R", 1), ("N", 1), ("E", 1), ("F", 1)], &[], &[("y", P)])
    },
    Case {
        generate: Some(gen_spmm),
        ..c(
            "spmm_csr R64 N100 E1000 F129 BE16",
            "spmm_csr.tile",
            &[("BE", i(16))],
            &[("R", 64), ("N", 100), ("E", 1000), ("F", 129)],
            &[],
            &[("y", P)],
        )
    },
    Case {
        generate: Some(gen_rgcn),
        ..c("rgcn N40 RELS4 E300 FO70", "rgcn.tile", &[], &[("N", 40), ("RELS", 4), ("E", 300), ("FO", 70)], &[], &[("out", A)])
    },
    Case {
        generate: Some(gen_rgcn),
        ..c(
            "rgcn N9 RELS3 E17 FO33 FI32 BE16 BN32",
            "rgcn.tile",
            &[("FI", i(32)), ("BE", i(16)), ("BN", i(32))],
            &[("N", 9), ("RELS", 3), ("E", 17), ("FO", 33)],
            &[],
            &[("out", A)],
        )
    },
    Case {
        generate: Some(gen_rgcn),
        ..c("rgcn N1 RELS2 E1 FO1", "rgcn.tile", &[], &[("N", 1), ("RELS", 2), ("E", 1), ("FO", 1)], &[], &[("out", A)])
    },
    Case {
        generate: Some(gen_embedding_bag),
        ..c(
            "embedding_bag_bwd I100 V10 NB7 F70",
            "embedding_bag_bwd.tile",
            &[],
            &[("I", 100), ("V", 10), ("NB", 7), ("F", 70)],
            &[],
            &[("grad_weight", A)],
        )
    },
    Case {
        generate: Some(gen_embedding_bag_oob),
        ..c(
            "embedding_bag_bwd out-of-range indices I33 V50 NB33 F65",
            "embedding_bag_bwd.tile",
            &[],
            &[("I", 33), ("V", 50), ("NB", 33), ("F", 65)],
            &[],
            &[("grad_weight", A)],
        )
    },
    Case {
        generate: Some(gen_embedding_bag),
        ..c(
            "embedding_bag_bwd I1 V1 NB1 F1",
            "embedding_bag_bwd.tile",
            &[],
            &[("I", 1), ("V", 1), ("NB", 1), ("F", 1)],
            &[],
            &[("grad_weight", A)],
        )
    },
    // The conformance programs of `tests/ops`: each built-in's edge semantics.
    op("ops math N=1000", "ops/math.tile", &[], &[("N", 1000)], inputs::math, MATH_OUT, MATH_TOL),
    op("ops math N=37 B=32", "ops/math.tile", &[("B", i(32))], &[("N", 37)], inputs::math, MATH_OUT, MATH_TOL),
    op("ops arith N=700", "ops/arith.tile", &[], &[("N", 700)], inputs::arith, ARITH_OUT, &[("*", X)]),
    op("ops intops N=1100", "ops/intops.tile", &[], &[("N", 1100)], inputs::intops, INTOPS_OUT, &[("*", X)]),
    op("ops casts N=150", "ops/casts.tile", &[], &[("N", 150)], inputs::casts, CASTS_OUT, &[("*", X)]),
    op("ops window R37 C50", "ops/window.tile", &[], &[("R", 37), ("C", 50)], inputs::window, WINDOW_OUT, &[("*", X)]),
    op(
        "ops window R5 C13 (tile larger than tensor)",
        "ops/window.tile",
        &[],
        &[("R", 5), ("C", 13)],
        inputs::window,
        WINDOW_OUT,
        &[("*", X)],
    ),
    op(
        "ops window R1 C1 BR=2 BC=4",
        "ops/window.tile",
        &[("BR", i(2)), ("BC", i(4))],
        &[("R", 1), ("C", 1)],
        inputs::window,
        WINDOW_OUT,
        &[("*", X)],
    ),
    op(
        "ops gather_scatter R13 C9 N300 M200",
        "ops/gather_scatter.tile",
        &[],
        &[("R", 13), ("C", 9), ("N", 300), ("M", 200)],
        inputs::gather_scatter,
        GATHER_OUT,
        &[("*", X)],
    ),
    op(
        "ops gather_scatter R1 C1 N5 M1 B=256",
        "ops/gather_scatter.tile",
        &[("B", i(256))],
        &[("R", 1), ("C", 1), ("N", 5), ("M", 1)],
        inputs::gather_scatter,
        GATHER_OUT,
        &[("*", X)],
    ),
    op(
        "ops atomics N1000 M5 B=32",
        "ops/atomics.tile",
        &[],
        &[("N", 1000), ("M", 5)],
        inputs::atomics,
        ATOMICS_OUT,
        &[("fa", D), ("*", X)],
    ),
    op(
        "ops atomics N700 M3 B=256",
        "ops/atomics.tile",
        &[("B", i(256))],
        &[("N", 700), ("M", 3)],
        inputs::atomics,
        ATOMICS_OUT,
        &[("fa", D), ("*", X)],
    ),
    op(
        "ops indexed N7 F5 E150 T3",
        "ops/indexed.tile",
        &[],
        &[("N", 7), ("F", 5), ("E", 150), ("T", 3)],
        inputs::indexed,
        INDEXED_OUT,
        &[("fsum", D), ("dsum", D), ("*", X)],
    ),
    op(
        "ops indexed empty view N4 F1 E33 T2 BE=16",
        "ops/indexed.tile",
        &[("BE", i(16))],
        &[("N", 4), ("F", 1), ("E", 33), ("T", 2)],
        inputs::indexed_oob_view,
        INDEXED_OUT,
        &[("fsum", D), ("dsum", D), ("*", X)],
    ),
    op(
        "ops masked_softmax R37 C29",
        "ops/masked_softmax.tile",
        &[],
        &[("R", 37), ("C", 29)],
        inputs::masked_softmax,
        SOFTMAX_OUT,
        SOFTMAX_TOL,
    ),
    op(
        "ops masked_softmax R5 C32",
        "ops/masked_softmax.tile",
        &[],
        &[("R", 5), ("C", 32)],
        inputs::masked_softmax,
        SOFTMAX_OUT,
        SOFTMAX_TOL,
    ),
    op(
        "ops argscan R37 C29",
        "ops/argscan.tile",
        &[],
        &[("R", 37), ("C", 29), ("P", 5)],
        inputs::argscan,
        ARGSCAN_OUT,
        &[("bcs", D), ("*", X)],
    ),
    op(
        "ops argscan R6 C32 BR=2",
        "ops/argscan.tile",
        &[("BR", i(2))],
        &[("R", 6), ("C", 32), ("P", 3)],
        inputs::argscan,
        ARGSCAN_OUT,
        &[("bcs", D), ("*", X)],
    ),
    // Picking by index: a partial last window (R 37), a run-time row, the last column past C.
    Case {
        name: "ops pick R37 C29",
        file: "ops/pick.tile",
        consts: &[],
        dims: &[("R", 37), ("C", 29), ("P", 5)],
        scalars: &[("j", 3.0)],
        generate: Some(inputs::scan_ties),
        outputs: &[("first", P), ("last", P), ("row", P), ("el", P), ("big", P)],
        tols: &[("*", X)],
        tf32: false,
        kernel: Some("pick"),
        warp_specialize: false,
        warps: None,
    },
    // Slicing: rows, the last columns, part of a run-time row, a bool corner.
    Case {
        name: "ops slices R37 C29",
        file: "ops/pick.tile",
        consts: &[],
        dims: &[("R", 37), ("C", 29), ("P", 5)],
        scalars: &[("j", 3.0)],
        generate: Some(inputs::scan_ties),
        outputs: &[("mid", P), ("tail", P), ("part", P), ("corner", P)],
        tols: &[("*", X)],
        tf32: false,
        kernel: Some("slices"),
        warp_specialize: false,
        warps: None,
    },
    // `std::random`: Philox's words and `randint`/`rand` bit for bit (a seed with a high word,
    // a partial last block); `randn` through the approximate `log`/`cos`.
    Case {
        name: "ops random N=1000",
        file: "ops/random.tile",
        consts: &[],
        dims: &[("N", 1000)],
        scalars: &[("seed", 4_886_718_345.0)],
        generate: None,
        outputs: &[("w", P), ("bits", P), ("uni", P), ("nor", P), ("uni4", P)],
        tols: &[("nor", Tol::Ulps { ulps: 16.0, atol: 1e-5 }), ("*", X)],
        tf32: false,
        kernel: None,
        warp_specialize: false,
        warps: None,
    },
    op("ops scan R37 C50", "ops/scan.tile", &[], &[("R", 37), ("C", 50)], inputs::scan_ties, SCAN_OUT, &[("cs", D), ("cp", D), ("*", X)]),
    Case {
        tols: &[("*", X)],
        ..c(
            "ops scan_fn R37 C50",
            "ops/scan_fn.tile",
            &[],
            &[("R", 37), ("C", 50)],
            &[],
            &[("decay", P), ("mix", P), ("big", P), ("firsts", P)],
        )
    },
    Case {
        tols: &[("*", X)],
        ..c(
            "ops scan_fn R1 C1",
            "ops/scan_fn.tile",
            &[],
            &[("R", 1), ("C", 1)],
            &[],
            &[("decay", P), ("mix", P), ("big", P), ("firsts", P)],
        )
    },
    // Segment reductions: nodes without edges, with part of a block and several blocks.
    Case {
        generate: Some(gen_segment),
        tols: &[("s", D), ("a", D), ("*", X)],
        ..c("ops segment N40 E300 F5", "ops/segment.tile", &[], &[("N", 40), ("E", 300), ("F", 5)], &[], &[("s", P), ("m", P), ("a", P)])
    },
    op("ops scan R1 C1", "ops/scan.tile", &[], &[("R", 1), ("C", 1)], inputs::scan_ties, SCAN_OUT, &[("cs", D), ("cp", D), ("*", X)]),
    op("ops loops P32", "ops/loops.tile", &[], &[], inputs::loops, &[("out", P), ("t", P)], &[("*", X)]),
    op("ops exits P32", "ops/exits.tile", &[], &[], inputs::loops, &[("out", P)], &[("*", X)]),
    // i8 dots on the tensor cores are exact; f32 ones are FMAs, or tf32 MMAs (10-bit operands).
    Case {
        tols: &[("ci", X), ("cti", X)],
        ..c("ops dot_wide M70 N90 K100", "ops/dot_wide.tile", &[], &[("M", 70), ("N", 90), ("K", 100)], &[], DOT_WIDE_OUT)
    },
    Case {
        tols: &[("ci", X), ("cti", X), ("*", Tol::Ulps { ulps: 16384.0, atol: 0.02 })],
        tf32: true,
        ..c("ops dot_wide tf32 M64 N64 K256", "ops/dot_wide.tile", &[], &[("M", 64), ("N", 64), ("K", 256)], &[], DOT_WIDE_OUT)
    },
    // `a` transposed as loaded: wgmma's M-major descriptors on two warpgroups and on one, and
    // `ldmatrix.trans` (BM 64 on 8 warps, and f16 32 × 32 tiles, take `mma.sync`); edges on
    // every side, K not a multiple of the step, and a single element.
    c("ops dot_trans M150 N100 K77", "ops/dot_trans.tile", &[], &[("M", 150), ("N", 100), ("K", 77)], &[], &[("c", P), ("ct", P)]),
    c("ops dot_trans M1 N1 K1", "ops/dot_trans.tile", &[], &[("M", 1), ("N", 1), ("K", 1)], &[], &[("c", P), ("ct", P)]),
    c(
        "ops dot_trans BM=64 M70 N65 K130",
        "ops/dot_trans.tile",
        &[("BM", i(64))],
        &[("M", 70), ("N", 65), ("K", 130)],
        &[],
        &[("c", P), ("ct", P)],
    ),
    Case {
        kernel: Some("dot_trans_64"),
        ..c("ops dot_trans_64 M100 N70 K45", "ops/dot_trans.tile", &[], &[("M", 100), ("N", 70), ("K", 45)], &[], &[("c", P)])
    },
    Case {
        kernel: Some("dot_trans_small"),
        ..c("ops dot_trans_small M45 N37 K50", "ops/dot_trans.tile", &[], &[("M", 45), ("N", 37), ("K", 50)], &[], &[("c", P)])
    },
    // Barriers between a program's own accesses (`order_memory`): without them, warps read
    // stale values and the wrong store wins.
    Case { tols: &[("a", D), ("s", D), ("*", X)], ..c("ops order P64", "ops/order.tile", &[], &[("P", 64)], &[], ORDER_OUT) },
    Case {
        tols: &[("a", D), ("s", D), ("*", X)],
        ..c("ops order P3 B=256", "ops/order.tile", &[("B", i(256))], &[("P", 3)], &[], ORDER_OUT)
    },
    Case { tols: &[("*", X)], ..c("ops convert R9 C100", "ops/convert.tile", &[], &[("R", 9), ("C", 100)], &[], CONVERT_OUT) },
    Case {
        tols: &[("*", X)],
        ..c("ops convert R37 C61 BR=8 BC=64", "ops/convert.tile", &[("BR", i(8)), ("BC", i(64))], &[("R", 37), ("C", 61)], &[], CONVERT_OUT)
    },
    c("ops epilogue M72 N100", "ops/epilogue.tile", &[], &[("M", 72), ("N", 100), ("P", 9)], &[], &[("d", P), ("e", P)]),
    c("ops epilogue M128 N64", "ops/epilogue.tile", &[], &[("M", 128), ("N", 64), ("P", 16)], &[], &[("d", P), ("e", P)]),
    Case {
        kernel: Some("epilogue_reshaped"),
        ..c("ops epilogue_reshaped M72 N100", "ops/epilogue.tile", &[], &[("M", 72), ("N", 100), ("NR", 7), ("MR", 5)], &[], &[("f", P)])
    },
    c("ops convert_warp M48", "ops/convert_warp.tile", &[], &[("M", 48)], &[], &[("d", P)]),
];

/// The outcome of one case.
#[derive(Clone, Debug)]
pub struct CaseResult {
    pub passed: bool,
    /// One line: what was compared and how far apart, or why it failed.
    pub detail: String,
}

/// Runs the table (cases whose name contains `filter`, all when `None`) and prints one line per
/// case and a final `N passed, N failed`, the code built for `target` (by default the best the
/// GPU runs). Returns whether every case passed; `Err` when there is no GPU (and `interp_only` is
/// off), the GPU cannot run `target`'s code, or no case matches.
/// With `warp_specialize`, every case is built with `Options::warp_specialize` on (kernels whose
/// loop the pass takes run with a producer warpgroup; the others are unchanged).
pub fn run(
    filter: Option<&str>,
    interp_only: bool,
    codegens: &[Codegen],
    target: Option<Target>,
    warp_specialize: bool,
) -> Result<bool, String> {
    let selected: Vec<Case> = CASES
        .iter()
        .filter(|c| filter.is_none_or(|f| c.name.contains(f)))
        .map(|c| Case { warp_specialize: c.warp_specialize || warp_specialize, ..c.clone() })
        .collect();
    if selected.is_empty() {
        return Err(format!("error: no self-test case matches `{}`", filter.unwrap_or_default()));
    }
    let rt = if interp_only {
        None
    } else {
        match Runtime::new() {
            Ok(rt) => Some(rt),
            Err(e) => {
                return Err(format!(
                    "error: `tessera selftest` runs the examples on a GPU, and there is none here: {e}\n\
                     (`tessera selftest --interp-only` checks the cases on the interpreter alone)"
                ));
            }
        }
    };
    let target = match (&rt, target) {
        (Some(rt), Some(t)) if !rt.supports(t) => {
            return Err(format!("error: this GPU ({}) cannot run {} code", rt.device_name(), t.name()));
        }
        (_, Some(t)) => t,
        (Some(rt), None) if rt.supports(Target::Sm90a) => Target::Sm90a,
        (Some(_), None) => Target::Sm80,
        (None, None) => Target::Sm90a,
    };
    match &rt {
        Some(rt) => {
            let (ma, mi) = rt.compute_capability();
            println!("self-test on {} (sm_{ma}{mi}, code for {}): GPU against the interpreter", rt.device_name(), target.name());
        }
        None => println!("self-test on the interpreter only (no GPU): every output must be written"),
    }
    let (mut passed, mut failed) = (0, 0);
    for (n, case) in selected.iter().enumerate() {
        for &codegen in codegens {
            let start = Instant::now();
            let r = run_case(case, rt.as_ref(), target, codegen, 0x5e1f + n as u64);
            let ms = start.elapsed().as_secs_f64() * 1e3;
            let status = if r.passed { "ok  " } else { "FAIL" };
            let emitter = if codegens.len() > 1 { format!(" [{}]", codegen.name()) } else { String::new() };
            println!("{status} {}{emitter}: {} ({ms:.0} ms)", case.name, r.detail);
            if r.passed {
                passed += 1;
            } else {
                failed += 1;
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

/// Runs one case; never panics on a failing kernel (a failure is a result).
pub fn run_case(case: &Case, rt: Option<&Runtime>, target: Target, codegen: Codegen, seed: u64) -> CaseResult {
    match try_case(case, rt, target, codegen, seed) {
        Ok(r) => r,
        Err(detail) => CaseResult { passed: false, detail },
    }
}

/// Compiles a case's kernel (all its consts applied).
pub fn compile_case(case: &Case, target: Target, codegen: Codegen) -> Result<CompiledKernel, String> {
    let text =
        EXAMPLES.iter().find(|(f, _)| *f == case.file).map(|(_, t)| *t).ok_or_else(|| format!("no embedded example `{}`", case.file))?;
    let opts = Options {
        consts: case.consts.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
        target,
        verify: cfg!(debug_assertions),
        tf32: case.tf32,
        warp_specialize: case.warp_specialize.then_some(true),
        warps: case.warps,
        codegen,
        ..Options::default()
    };
    let path = if case.file.starts_with("ops/") { format!("tests/{}", case.file) } else { format!("examples/{}", case.file) };
    let module =
        tessera_compiler::compile(&Source::new(path, text.to_string()), &opts).map_err(|d| format!("does not compile:\n{}", d.render()))?;
    match case.kernel {
        Some(name) => {
            module.kernels.into_iter().find(|k| k.meta.name == name).ok_or_else(|| format!("`{}` has no kernel `{name}`", case.file))
        }
        None => module.kernels.into_iter().next().ok_or_else(|| format!("`{}` has no kernel", case.file)),
    }
}

/// Builds a case's arguments (the same values for both backends): returns them and, per
/// argument, whether it is a poisoned output.
pub fn build_args(case: &Case, k: &CompiledKernel, rng: &mut Rng) -> Result<(Vec<Arg>, Vec<bool>), String> {
    let mut sizes: Vec<(String, usize)> = case.dims.iter().map(|(n, v)| (n.to_string(), *v)).collect();
    for (n, v) in case.consts {
        if let ConstValue::Int(v) = v
            && let Ok(v) = usize::try_from(*v)
        {
            sizes.push((n.to_string(), v));
        }
    }
    for (n, v) in &k.meta.consts {
        if let ConstValue::Int(v) = v
            && let Ok(v) = usize::try_from(*v)
            && !sizes.iter().any(|(x, _)| x == n)
        {
            sizes.push((n.clone(), v));
        }
    }
    let mut generated = match case.generate {
        Some(g) => g(&sizes, rng)?,
        None => vec![],
    };
    // Generated tensors bind the dimension symbols of their parameters.
    for p in &k.meta.params {
        if let (ParamKind::Tensor { dims, .. }, Some((_, t))) = (&p.kind, generated.iter().find(|(n, _)| *n == p.name)) {
            for (d, &n) in dims.iter().zip(&t.shape) {
                if let Dim::Sym(s) = d
                    && !sizes.iter().any(|(x, _)| x == s)
                {
                    sizes.push((s.clone(), n));
                }
            }
        }
    }
    let mut args = vec![];
    let mut poison = vec![];
    for p in &k.meta.params {
        match &p.kind {
            ParamKind::Tensor { dtype, dims, mutable } => {
                if let Some(pos) = generated.iter().position(|(n, _)| *n == p.name) {
                    let (_, t) = generated.swap_remove(pos);
                    args.push(Arg::Tensor(t));
                    poison.push(false);
                    continue;
                }
                let mut shape = vec![];
                for d in dims {
                    shape.push(match d {
                        Dim::Const(c) => usize::try_from(*c).map_err(|_| format!("`{}` has a negative dimension", p.name))?,
                        Dim::Sym(s) => sizes
                            .iter()
                            .find(|(x, _)| x == s)
                            .map(|(_, n)| *n)
                            .ok_or_else(|| format!("the case gives no size for `{s}` (of `{}`)", p.name))?,
                    });
                }
                let out = case.outputs.iter().find(|(n, _)| *n == p.name).map(|(_, o)| *o);
                match (mutable, out) {
                    (true, Some(Out::Poisoned)) => {
                        args.push(Arg::Tensor(poisoned(*dtype, &shape)));
                        poison.push(true);
                    }
                    (true, Some(Out::Accumulated)) | (false, None) => {
                        args.push(Arg::Tensor(try_random_tensor(*dtype, &shape, rng).map_err(|e| format!("`{}`: {e}", p.name))?));
                        poison.push(false);
                    }
                    (true, None) => return Err(format!("output `{}` is not in the case's outputs", p.name)),
                    (false, Some(_)) => return Err(format!("`{}` is read-only but listed as an output", p.name)),
                }
            }
            ParamKind::Scalar { dtype } => {
                let v = case
                    .scalars
                    .iter()
                    .find(|(n, _)| *n == p.name)
                    .map(|(_, v)| *v)
                    .ok_or_else(|| format!("the case gives no value for scalar `{}`", p.name))?;
                args.push(Arg::Scalar(match dtype {
                    DType::Bool => Scalar::Bool(v != 0.0),
                    d if d.is_float() => Scalar::Float(v),
                    _ => Scalar::Int(v as i64),
                }));
                poison.push(false);
            }
        }
    }
    Ok((args, poison))
}

/// What the interpreter side starts from for a poisoned output: NaN (floats) or -1 (integers),
/// the values the GPU's all-ones bytes give.
fn poisoned(dtype: DType, shape: &[usize]) -> HostTensor {
    let mut t = HostTensor::zeros(dtype, shape);
    for i in 0..t.numel() {
        if dtype.is_float() {
            t.set_f64(i, f64::NAN);
        } else {
            t.set_i64(i, -1);
        }
    }
    t
}

fn try_case(case: &Case, rt: Option<&Runtime>, target: Target, codegen: Codegen, seed: u64) -> Result<CaseResult, String> {
    let k = compile_case(case, target, codegen)?;
    let mut rng = Rng::new(seed);
    let (args, poison) = build_args(case, &k, &mut rng)?;
    let mut want = args.clone();
    let t0 = Instant::now();
    exec::run_interp(&k, &mut want).map_err(|e| format!("interpreter: {e}"))?;
    let interp_ms = t0.elapsed().as_secs_f64() * 1e3;
    let outputs: Vec<usize> = (0..k.meta.params.len()).filter(|&i| case.outputs.iter().any(|(n, _)| *n == k.meta.params[i].name)).collect();
    let Some(rt) = rt else {
        // Interpreter only: every poisoned element must have been written.
        let mut notes = vec![];
        let mut ok = true;
        for &i in &outputs {
            if let Arg::Tensor(t) = &want[i] {
                let unwritten = if poison[i] { (0..t.numel()).filter(|&j| t.get_f64(j).is_nan()).count() } else { 0 };
                if unwritten > 0 {
                    ok = false;
                }
                notes.push(format!("{}: {} elements, {unwritten} NaN", k.meta.params[i].name, t.numel()));
            }
        }
        return Ok(CaseResult { passed: ok, detail: format!("{} (interpreter {interp_ms:.0} ms)", notes.join("; ")) });
    };
    let mut got = args;
    let t1 = Instant::now();
    exec::run_gpu(rt, &k, &mut got, &poison).map_err(|e| format!("gpu: {e}"))?;
    let gpu_ms = t1.elapsed().as_secs_f64() * 1e3;
    let mut ok = true;
    let mut notes = vec![];
    for &i in &outputs {
        let name = &k.meta.params[i].name;
        let (Arg::Tensor(g), Arg::Tensor(w)) = (&got[i], &want[i]) else {
            return Err(format!("output `{name}` is not a tensor"));
        };
        let tol = case.tol(name);
        let (passed, note) = if tol == Tol::Dtype && w.dtype.is_float() {
            let c = exec::compare(g, w);
            let mut note = format!("{name}: {} elements, max abs err {:.1e}, max rel err {:.1e}", c.n, c.max_abs, c.max_rel);
            if let Some((idx, gv, wv)) = c.first_bad {
                note.push_str(&format!(
                    ", {} bad (tolerance {:.0e} + {:.0e}·|x|), first at {:?}: gpu {gv}, interpreter {wv}",
                    c.bad,
                    c.atol,
                    c.rtol,
                    exec::unravel(&g.shape, idx)
                ));
            } else if !c.ok() {
                note.push_str(", shapes or dtypes differ");
            }
            (c.ok(), note)
        } else {
            compare_tol(name, g, w, tol)
        };
        ok &= passed;
        notes.push(note);
    }
    Ok(CaseResult { passed: ok, detail: format!("{} (gpu {gpu_ms:.0} ms, interpreter {interp_ms:.0} ms)", notes.join("; ")) })
}

/// The spacing of the float `dtype`'s values at `x` (subnormal spacing below the normal range).
pub fn ulp(dtype: DType, x: f64) -> f64 {
    let (mant, min_exp) = match dtype {
        DType::F16 => (10, -14),
        DType::BF16 => (7, -126),
        DType::F32 => (23, -126),
        _ => (52, -1022),
    };
    let e = if x == 0.0 || !x.is_finite() { min_exp } else { (((x.to_bits() >> 52) & 0x7ff) as i32 - 1023).max(min_exp) };
    2f64.powi(e - mant)
}

/// Compares an output under an exact or ulp tolerance (integers and bools: exactly, as
/// integers): NaN on either side fails, an infinity matches only itself. Returns whether it
/// passed and a one-line note.
pub fn compare_tol(name: &str, got: &HostTensor, want: &HostTensor, tol: Tol) -> (bool, String) {
    if got.shape != want.shape || got.dtype != want.dtype {
        return (false, format!("{name}: shapes or dtypes differ"));
    }
    if !want.dtype.is_float() {
        let bad: Vec<usize> = (0..want.numel()).filter(|&i| got.get_i64(i) != want.get_i64(i)).collect();
        let mut note = format!("{name}: {} elements, exact", want.numel());
        if let Some(&i) = bad.first() {
            let (g, w) = (got.get_i64(i), want.get_i64(i));
            note.push_str(&format!(", {} bad, first at {:?}: gpu {g}, interpreter {w}", bad.len(), exec::unravel(&got.shape, i)));
        }
        return (bad.is_empty(), note);
    }
    let (ulps, atol) = match tol {
        Tol::Ulps { ulps, atol } => (ulps, atol),
        _ => (0.0, 0.0),
    };
    // The largest error, and the largest share of its own element's tolerance.
    let (mut bad, mut first, mut max_abs, mut worst) = (0usize, None, 0.0f64, 0.0f64);
    for i in 0..want.numel() {
        let (g, w) = (got.get_f64(i), want.get_f64(i));
        let fails = if g.is_nan() || w.is_nan() {
            true
        } else if g.is_infinite() || w.is_infinite() {
            g != w
        } else {
            let (diff, allowed) = ((g - w).abs(), atol + ulps * ulp(want.dtype, w));
            max_abs = max_abs.max(diff);
            if allowed > 0.0 {
                worst = worst.max(diff / allowed);
            }
            diff > allowed
        };
        if fails {
            bad += 1;
            first.get_or_insert((i, g, w));
        }
    }
    let mut note = match tol {
        Tol::Ulps { ulps, atol } => {
            format!("{name}: {} elements, max err {max_abs:.1e}, {:.0}% of {ulps} ulp + {atol:.0e}", want.numel(), worst * 100.0)
        }
        _ => format!("{name}: {} elements, exact", want.numel()),
    };
    if let Some((i, g, w)) = first {
        note.push_str(&format!(", {bad} bad, first at {:?}: gpu {g:e}, interpreter {w:e}", exec::unravel(&got.shape, i)));
    }
    (bad == 0, note)
}

/// The size named `name` in a case's sizes.
pub fn size(sizes: &Sizes, name: &str) -> Result<usize, String> {
    sizes.iter().find(|(n, _)| n == name).map(|(_, v)| *v).ok_or_else(|| format!("the case gives no size for `{name}`"))
}

/// A uniform index in `0..n` (`n > 0`).
fn below(rng: &mut Rng, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

fn i32_tensor(values: &[usize]) -> HostTensor {
    let v: Vec<i64> = values.iter().map(|&x| x as i64).collect();
    HostTensor::from_i64(DType::I32, &[v.len()], &v)
}

/// A random CSR structure of `r` rows over `n` columns with `e` entries: `(row_ptr: i32[r + 1],
/// col_idx: i32[e])`. Row lengths are skewed (the first rows get most entries, longer than any
/// edge block); column indices are in range and sorted
/// within each row; rows 3, 8, 13, … are empty.
pub fn csr(r: usize, n: usize, e: usize, rng: &mut Rng) -> (HostTensor, HostTensor) {
    let mut rows: Vec<usize> = (0..e)
        .map(|_| {
            let u = (rng.uniform() + 1.0) / 2.0;
            let row = ((u * u * r as f64) as usize).min(r.saturating_sub(1));
            // Rows 3, 8, 13, … stay empty.
            if row % 5 == 3 { row - 1 } else { row }
        })
        .collect();
    rows.sort_unstable();
    let mut row_ptr = vec![0usize; r + 1];
    for &row in &rows {
        row_ptr[row + 1] += 1;
    }
    for i in 0..r {
        row_ptr[i + 1] += row_ptr[i];
    }
    let mut cols: Vec<usize> = (0..e).map(|_| below(rng, n)).collect();
    for i in 0..r {
        cols[row_ptr[i]..row_ptr[i + 1]].sort_unstable();
    }
    (i32_tensor(&row_ptr), i32_tensor(&cols))
}

/// A random graph for `gat`: `E` edges into `N` nodes (CSR by destination), some nodes with none.
pub fn gen_gat(sizes: &Sizes, rng: &mut Rng) -> Result<Vec<(&'static str, HostTensor)>, String> {
    let n = size(sizes, "N")?;
    let (row_ptr, col_idx) = csr(n, n, size(sizes, "E")?, rng);
    Ok(vec![("row_ptr", row_ptr), ("col_idx", col_idx)])
}

/// The row pointers of `E` edges into `N` nodes (CSR), some nodes with none: `ops/segment.tile`.
pub fn gen_segment(sizes: &Sizes, rng: &mut Rng) -> Result<Vec<(&'static str, HostTensor)>, String> {
    let (row_ptr, _) = csr(size(sizes, "N")?, 1, size(sizes, "E")?, rng);
    Ok(vec![("row_ptr", row_ptr)])
}

/// A random graph for `rgat`: CSR by destination over `N` nodes with `E` edges, each edge's
/// relation below `R - 1` (the last relation has no edges when there are several).
pub fn gen_rgat(sizes: &Sizes, rng: &mut Rng) -> Result<Vec<(&'static str, HostTensor)>, String> {
    let n = size(sizes, "N")?;
    let e = size(sizes, "E")?;
    let used = size(sizes, "R")?.saturating_sub(1).max(1);
    let (row_ptr, col_idx) = csr(n, n, e, rng);
    let rel: Vec<usize> = (0..e).map(|_| below(rng, used)).collect();
    Ok(vec![("row_ptr", row_ptr), ("col_idx", col_idx), ("etype", i32_tensor(&rel))])
}

/// A random graph for `hgt`: CSR by destination over `N` nodes with `E` edges whose sources are
/// `M` rows (one per edge type and source node).
pub fn gen_hgt(sizes: &Sizes, rng: &mut Rng) -> Result<Vec<(&'static str, HostTensor)>, String> {
    let (row_ptr, col_idx) = csr(size(sizes, "N")?, size(sizes, "M")?, size(sizes, "E")?, rng);
    Ok(vec![("row_ptr", row_ptr), ("col_idx", col_idx)])
}

/// Inputs of `spmm_csr`: a CSR structure of `R` rows over `N` columns with `E` entries.
pub fn gen_spmm(sizes: &Sizes, rng: &mut Rng) -> Result<Vec<(&'static str, HostTensor)>, String> {
    let (row_ptr, col_idx) = csr(size(sizes, "R")?, size(sizes, "N")?, size(sizes, "E")?, rng);
    Ok(vec![("row_ptr", row_ptr), ("col_idx", col_idx)])
}

/// A random relational graph for `rgcn`: `E` edges between `N` nodes over `RELS` relations,
/// sorted by relation (the last relation has no edges), and the host-side split of each
/// relation's edges into tiles of at most `BE`: `(src, dst, tile_rel, tile_start, tile_end)`.
pub fn rgcn_graph(n: usize, rels: usize, e: usize, be: usize, rng: &mut Rng) -> [HostTensor; 5] {
    let used = rels.saturating_sub(1).max(1);
    let mut rel: Vec<usize> = (0..e).map(|_| below(rng, used)).collect();
    rel.sort_unstable();
    let src: Vec<usize> = (0..e).map(|_| below(rng, n)).collect();
    // Skewed destinations: some nodes receive many messages (atomic contention), some none.
    let dst: Vec<usize> = (0..e)
        .map(|_| {
            let u = (rng.uniform() + 1.0) / 2.0;
            ((u * u * u * n as f64) as usize).min(n.saturating_sub(1))
        })
        .collect();
    let (mut t_rel, mut t_start, mut t_end) = (vec![], vec![], vec![]);
    let mut s = 0;
    while s < e {
        let r = rel[s];
        let end = rel[s..].iter().position(|&x| x != r).map_or(e, |p| s + p);
        let mut t = s;
        while t < end {
            t_rel.push(r);
            t_start.push(t);
            t_end.push((t + be.max(1)).min(end));
            t += be.max(1);
        }
        s = end;
    }
    [i32_tensor(&src), i32_tensor(&dst), i32_tensor(&t_rel), i32_tensor(&t_start), i32_tensor(&t_end)]
}

/// Inputs of `rgcn` (see [`rgcn_graph`]); `BE` is the kernel's const.
pub fn gen_rgcn(sizes: &Sizes, rng: &mut Rng) -> Result<Vec<(&'static str, HostTensor)>, String> {
    let [src, dst, tile_rel, tile_start, tile_end] =
        rgcn_graph(size(sizes, "N")?, size(sizes, "RELS")?, size(sizes, "E")?, size(sizes, "BE")?, rng);
    Ok(vec![("src", src), ("dst", dst), ("tile_rel", tile_rel), ("tile_start", tile_start), ("tile_end", tile_end)])
}

/// Lookups of an embedding bag: `(idx: i32[i], bag: i32[i])`, indices into `v` rows with
/// repeats (so the backward's atomics collide), bags `0..nb` in order. With `out_of_range`,
/// every seventh index is -1 or `v` (such rows must be dropped, not written).
pub fn embedding_bag(i: usize, v: usize, nb: usize, out_of_range: bool, rng: &mut Rng) -> (HostTensor, HostTensor) {
    let idx: Vec<i64> = (0..i)
        .map(|k| match (out_of_range, k % 7) {
            (true, 3) => -1,
            (true, 5) => v as i64,
            _ => below(rng, v) as i64,
        })
        .collect();
    let bag: Vec<i64> = (0..i).map(|k| (k * nb / i.max(1)) as i64).collect();
    (HostTensor::from_i64(DType::I32, &[i], &idx), HostTensor::from_i64(DType::I32, &[i], &bag))
}

/// Inputs of `embedding_bag_bwd`: `I` lookups into `V` rows in `NB` bags.
pub fn gen_embedding_bag(sizes: &Sizes, rng: &mut Rng) -> Result<Vec<(&'static str, HostTensor)>, String> {
    let (idx, bag) = embedding_bag(size(sizes, "I")?, size(sizes, "V")?, size(sizes, "NB")?, false, rng);
    Ok(vec![("idx", idx), ("bag", bag)])
}

/// As [`gen_embedding_bag`], with out-of-range indices that the kernel must drop.
pub fn gen_embedding_bag_oob(sizes: &Sizes, rng: &mut Rng) -> Result<Vec<(&'static str, HostTensor)>, String> {
    let (idx, bag) = embedding_bag(size(sizes, "I")?, size(sizes, "V")?, size(sizes, "NB")?, true, rng);
    Ok(vec![("idx", idx), ("bag", bag)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulp_of_each_float_type() {
        assert_eq!(ulp(DType::F32, 1.0), f32::EPSILON as f64);
        assert_eq!(ulp(DType::F32, -1.5), f32::EPSILON as f64);
        assert_eq!(ulp(DType::F32, 0.0), 2f64.powi(-149));
        assert_eq!(ulp(DType::F32, 1e-40), 2f64.powi(-149));
        assert_eq!(ulp(DType::BF16, 3.0), 2f64.powi(-6));
        assert_eq!(ulp(DType::F16, 65504.0), 32.0);
        assert_eq!(ulp(DType::F16, 1e-6), 2f64.powi(-24));
    }

    #[test]
    fn tolerant_comparison_never_passes_nan() {
        let t = |v: &[f64]| HostTensor::from_f64(DType::F32, &[v.len()], v);
        let ulps = Tol::Ulps { ulps: 2.0, atol: 0.0 };
        assert!(compare_tol("x", &t(&[1.0, f64::INFINITY]), &t(&[1.0, f64::INFINITY]), Tol::Exact).0);
        assert!(!compare_tol("x", &t(&[f64::NAN]), &t(&[f64::NAN]), ulps).0);
        assert!(!compare_tol("x", &t(&[1.0]), &t(&[f64::NAN]), ulps).0);
        assert!(!compare_tol("x", &t(&[f64::INFINITY]), &t(&[f64::NEG_INFINITY]), ulps).0);
        assert!(!compare_tol("x", &t(&[3.4e38]), &t(&[f64::INFINITY]), ulps).0);
        assert!(compare_tol("x", &t(&[1.0 + 2.0 * f32::EPSILON as f64]), &t(&[1.0]), ulps).0);
        assert!(!compare_tol("x", &t(&[1.0 + 3.0 * f32::EPSILON as f64]), &t(&[1.0]), ulps).0);
        assert!(!compare_tol("x", &t(&[1.0 + f32::EPSILON as f64]), &t(&[1.0]), Tol::Exact).0);
        // Integers compare as integers, beyond f64's 2^53.
        let big = |v: i64| HostTensor::from_i64(DType::I64, &[1], &[v]);
        assert!(!compare_tol("x", &big((1 << 60) + 1), &big(1 << 60), Tol::Exact).0);
        assert!(compare_tol("x", &big((1 << 60) + 1), &big((1 << 60) + 1), Tol::Exact).0);
    }

    #[test]
    fn case_tolerances_by_name() {
        let case = CASES.iter().find(|c| c.file == "ops/math.tile").expect("a math case");
        assert_eq!(case.tol("fl"), Tol::Exact);
        assert!(matches!(case.tol("e2"), Tol::Ulps { .. }));
        assert_eq!(CASES[0].tol("z"), Tol::Dtype);
    }

    /// The conformance cases run on the interpreter and write every poisoned element.
    #[test]
    fn selftest_ops_cases_run_on_the_interpreter() {
        for (n, case) in CASES.iter().enumerate().filter(|(_, c)| c.file.starts_with("ops/")) {
            let r = run_case(case, None, Target::Sm90a, Codegen::Ptx, n as u64);
            assert!(r.passed, "{}: {}", case.name, r.detail);
        }
    }
}
