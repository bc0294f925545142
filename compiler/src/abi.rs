//! The kernel parameter ABI, once: which machine parameters a kernel's tile parameters become,
//! in order. The code generator declares them from this list, `KernelMeta::ptx_params` is
//! printed from it, the runtime's packer fills it and the loader checks a PTX entry against it.
//!
//! For each tensor parameter, its device pointer (8 bytes), then one `i32` size per dimension,
//! then one `i64` stride (in elements) per dimension; for each scalar parameter, its value in
//! the parameter's dtype (`bool` as one byte of 0 or 1; `f16` and `bf16` as their 16-bit
//! patterns). The CUDA driver puts each at the next multiple of its own size.
//!
//! A kernel whose pipelined loads are bulk tensor copies (sm_90a, `lower::pipeline`) also takes,
//! after all of those, a `u32` that is 1 when the runtime could encode every tensor map (else
//! the kernel copies with `cp.async`), then one 128-byte tensor map (`CUtensorMap`, aligned to
//! 64) per [`TensorMap`].

use crate::dtype::DType;
use crate::tir::{Param, ParamKind};
use serde::{Deserialize, Serialize};

/// The comment that records a kernel's tensor maps in its PTX, one line each: a loader checks the
/// metadata's maps against these (a box of another size would make the kernel expect other byte
/// counts on its mbarriers).
const MAP_LINE: &str = "// tessera.tensor_map ";

/// The PTX comment lines recording `maps` (`tensor_maps_in_ptx` reads them back).
pub fn tensor_map_lines(maps: &[TensorMap]) -> String {
    let mut out = String::new();
    for (i, m) in maps.iter().enumerate() {
        let boxes: Vec<String> = m.boxes.iter().map(|b| b.to_string()).collect();
        out.push_str(&format!("{MAP_LINE}{i} param {} box {} swizzle {}\n", m.param, boxes.join(","), m.swizzle));
    }
    out
}

/// The tensor maps a PTX text records (`tensor_map_lines`), in order.
pub fn tensor_maps_in_ptx(ptx: &str) -> Result<Vec<TensorMap>, String> {
    let mut out = vec![];
    for line in ptx.lines().filter_map(|l| l.strip_prefix(MAP_LINE)) {
        let bad = || format!("a malformed tensor-map line `{MAP_LINE}{line}`");
        let w: Vec<&str> = line.split(' ').collect();
        let ([_, "param", p, "box", b, "swizzle", s], Ok(i)) = (&w[..], w[0].parse::<usize>()) else { return Err(bad()) };
        if i != out.len() {
            return Err(bad());
        }
        let boxes = b.split(',').map(|x| x.parse::<u32>()).collect::<Result<Vec<_>, _>>().map_err(|_| bad())?;
        out.push(TensorMap { param: p.parse().map_err(|_| bad())?, boxes, swizzle: s.parse().map_err(|_| bad())? });
    }
    Ok(out)
}

/// Bytes of a tensor-map parameter (`CUtensorMap`), and its alignment.
pub const TENSOR_MAP_BYTES: u32 = 128;
pub const TENSOR_MAP_ALIGN: u32 = 64;

/// Most axes the copy engine's tensor maps have.
pub const MAX_MAP_RANK: usize = 5;

/// A tensor map the kernel copies through: tensor parameter `param` read in boxes of `boxes`
/// elements per axis (the tensor's axes in order, outermost first), landing in shared memory
/// with the 16-byte chunks of each 128/64/32-byte row swizzled (`swizzle` bytes, 0 for none;
/// `lir::index::SmemTile` is the layout). Out-of-range elements of a box read as zero.
///
/// A tensor of more than [`MAX_MAP_RANK`] axes is mapped with its outermost axes folded into
/// one (`TensorMap::folded`): their boxes are 1 (the kernel's views fix them), the map's first
/// axis has the product of their sizes, and a copy's coordinate on it is their row-major
/// linear index. The runtime encodes such a map only when those axes are contiguous with each
/// other (each one's stride the next one's size times its stride, axes of one element aside),
/// else none (the kernel copies without the copy engine).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorMap {
    pub param: usize,
    pub boxes: Vec<u32>,
    pub swizzle: u32,
}

impl TensorMap {
    /// How many outermost axes are folded into the map's first axis: 0 for a tensor of at most
    /// [`MAX_MAP_RANK`] axes, else enough that the map has that many.
    pub fn folded(&self) -> usize {
        if self.boxes.len() > MAX_MAP_RANK { self.boxes.len() - MAX_MAP_RANK + 1 } else { 0 }
    }

    /// The number of axes of the encoded map.
    pub fn map_rank(&self) -> usize {
        self.boxes.len().min(MAX_MAP_RANK)
    }
}

/// One machine parameter: what it holds, for tile parameter number `param`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// A tensor's device address; its elements are `elem_bytes` wide (declared with the PTX
    /// parameter as `.ptr.global.align`, so that a loader can check the dtype).
    Ptr { param: usize, elem_bytes: u32 },
    /// A tensor's size along `axis` (`i32`).
    Size { param: usize, axis: usize },
    /// A tensor's stride along `axis`, in elements (`i64`).
    Stride { param: usize, axis: usize },
    /// A scalar parameter's value.
    Scalar { param: usize, dtype: DType },
    /// `u32`: 1 when every tensor map that follows is valid, 0 when the kernel must copy without
    /// them (a stride or address the copy engine cannot take).
    MapsReady,
    /// Tensor map `map` of the kernel, over tensor parameter `param`.
    TensorMap { map: usize, param: usize },
}

impl Slot {
    /// The tile parameter this slot belongs to (`None` for `MapsReady`).
    pub fn param(self) -> Option<usize> {
        match self {
            Slot::Ptr { param, .. }
            | Slot::Size { param, .. }
            | Slot::Stride { param, .. }
            | Slot::Scalar { param, .. }
            | Slot::TensorMap { param, .. } => Some(param),
            Slot::MapsReady => None,
        }
    }

    /// Size in bytes.
    pub fn bytes(self) -> u32 {
        match self {
            Slot::Ptr { .. } | Slot::Stride { .. } => 8,
            Slot::Size { .. } | Slot::MapsReady => 4,
            Slot::Scalar { dtype, .. } => dtype.size() as u32,
            Slot::TensorMap { .. } => TENSOR_MAP_BYTES,
        }
    }

    /// Alignment in bytes (the size, but 64 for a tensor map).
    pub fn align(self) -> u32 {
        match self {
            Slot::TensorMap { .. } => TENSOR_MAP_ALIGN,
            s => s.bytes(),
        }
    }

    /// The type as `KernelMeta::ptx_params` names it: `ptr`, `i32`, `i64` or the scalar's dtype.
    pub fn type_name(self) -> String {
        match self {
            Slot::Ptr { .. } => "ptr".into(),
            Slot::Size { .. } => "i32".into(),
            Slot::Stride { .. } => "i64".into(),
            Slot::Scalar { dtype, .. } => dtype.to_string(),
            Slot::MapsReady => "u32".into(),
            Slot::TensorMap { .. } => "tensormap".into(),
        }
    }

    /// The name of the value: `x` for a scalar; `x.ptr`, `x.size0`, `x.stride0` for the parts of
    /// tensor `x`.
    pub fn name(self, params: &[Param]) -> String {
        let p = self.param().and_then(|i| params.get(i)).map_or("?", |p| p.name.as_str());
        match self {
            Slot::Ptr { .. } => format!("{p}.ptr"),
            Slot::Size { axis, .. } => format!("{p}.size{axis}"),
            Slot::Stride { axis, .. } => format!("{p}.stride{axis}"),
            Slot::Scalar { .. } => p.to_string(),
            Slot::MapsReady => "maps_ready".into(),
            Slot::TensorMap { map, .. } => format!("{p}.map{map}"),
        }
    }
}

/// The machine parameters of a kernel with tile parameters `params` that copies through the
/// tensor maps `maps`, in order.
pub fn slots(params: &[Param], maps: &[TensorMap]) -> Vec<Slot> {
    let mut out = vec![];
    for (param, p) in params.iter().enumerate() {
        match &p.kind {
            ParamKind::Tensor { dims, dtype, .. } => {
                out.push(Slot::Ptr { param, elem_bytes: dtype.size() as u32 });
                out.extend((0..dims.len()).map(|axis| Slot::Size { param, axis }));
                out.extend((0..dims.len()).map(|axis| Slot::Stride { param, axis }));
            }
            ParamKind::Scalar { dtype } => out.push(Slot::Scalar { param, dtype: *dtype }),
        }
    }
    if !maps.is_empty() {
        out.push(Slot::MapsReady);
        out.extend(maps.iter().enumerate().map(|(map, m)| Slot::TensorMap { map, param: m.param }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tir::Dim;

    #[test]
    fn tensors_are_pointer_sizes_strides() {
        let params = vec![
            Param {
                name: "x".into(),
                kind: ParamKind::Tensor { dtype: DType::F16, dims: vec![Dim::Sym("M".into()), Dim::Const(4)], mutable: false },
            },
            Param { name: "s".into(), kind: ParamKind::Scalar { dtype: DType::Bool } },
        ];
        let s = slots(&params, &[]);
        let names: Vec<String> = s.iter().map(|s| format!("{}:{}:{}", s.name(&params), s.type_name(), s.bytes())).collect();
        assert_eq!(names, ["x.ptr:ptr:8", "x.size0:i32:4", "x.size1:i32:4", "x.stride0:i64:8", "x.stride1:i64:8", "s:bool:1"]);
        assert_eq!(s[0], Slot::Ptr { param: 0, elem_bytes: 2 });
        // Tensor maps come last, after a flag saying whether they are valid.
        let maps = [TensorMap { param: 0, boxes: vec![64, 4], swizzle: 0 }];
        let s = slots(&params, &maps);
        let tail: Vec<String> =
            s[6..].iter().map(|s| format!("{}:{}:{}:{}", s.name(&params), s.type_name(), s.bytes(), s.align())).collect();
        assert_eq!(tail, ["maps_ready:u32:4:4", "x.map0:tensormap:128:64"]);
        // The PTX record of the maps reads back as written.
        let two = [maps[0].clone(), TensorMap { param: 3, boxes: vec![1, 8, 64], swizzle: 128 }];
        let text = format!(".version 8.0\n{}.target sm_90a\n", tensor_map_lines(&two));
        assert_eq!(tensor_maps_in_ptx(&text), Ok(two.to_vec()));
        assert!(tensor_maps_in_ptx("// tessera.tensor_map 1 param 0 box 4 swizzle 0\n").is_err(), "numbered out of order");
    }
}
