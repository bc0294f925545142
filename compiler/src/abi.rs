//! The kernel parameter ABI, once: which machine parameters a kernel's tile parameters become,
//! in order. The code generator declares them from this list, `KernelMeta::ptx_params` is
//! printed from it, the runtime's packer fills it and the loader checks a PTX entry against it.
//!
//! For each tensor parameter, its device pointer (8 bytes), then one `i32` size per dimension,
//! then one `i64` stride (in elements) per dimension; for each scalar parameter, its value in
//! the parameter's dtype (`bool` as one byte of 0 or 1; `f16` and `bf16` as their 16-bit
//! patterns). The CUDA driver puts each at the next multiple of its own size.

use crate::dtype::DType;
use crate::tir::{Param, ParamKind};

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
}

impl Slot {
    /// The tile parameter this slot belongs to.
    pub fn param(self) -> usize {
        match self {
            Slot::Ptr { param, .. } | Slot::Size { param, .. } | Slot::Stride { param, .. } | Slot::Scalar { param, .. } => param,
        }
    }

    /// Size (and alignment) in bytes.
    pub fn bytes(self) -> u32 {
        match self {
            Slot::Ptr { .. } | Slot::Stride { .. } => 8,
            Slot::Size { .. } => 4,
            Slot::Scalar { dtype, .. } => dtype.size() as u32,
        }
    }

    /// The type as `KernelMeta::ptx_params` names it: `ptr`, `i32`, `i64` or the scalar's dtype.
    pub fn type_name(self) -> String {
        match self {
            Slot::Ptr { .. } => "ptr".into(),
            Slot::Size { .. } => "i32".into(),
            Slot::Stride { .. } => "i64".into(),
            Slot::Scalar { dtype, .. } => dtype.to_string(),
        }
    }

    /// The name of the value: `x` for a scalar; `x.ptr`, `x.size0`, `x.stride0` for the parts of
    /// tensor `x`.
    pub fn name(self, params: &[Param]) -> String {
        let p = params.get(self.param()).map_or("?", |p| p.name.as_str());
        match self {
            Slot::Ptr { .. } => format!("{p}.ptr"),
            Slot::Size { axis, .. } => format!("{p}.size{axis}"),
            Slot::Stride { axis, .. } => format!("{p}.stride{axis}"),
            Slot::Scalar { .. } => p.to_string(),
        }
    }
}

/// The machine parameters of `params`, in order.
pub fn slots(params: &[Param]) -> Vec<Slot> {
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
        let s = slots(&params);
        let names: Vec<String> = s.iter().map(|s| format!("{}:{}:{}", s.name(&params), s.type_name(), s.bytes())).collect();
        assert_eq!(names, ["x.ptr:ptr:8", "x.size0:i32:4", "x.size1:i32:4", "x.stride0:i64:8", "x.stride1:i64:8", "s:bool:1"]);
        assert_eq!(s[0], Slot::Ptr { param: 0, elem_bytes: 2 });
    }
}
