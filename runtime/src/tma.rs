//! Tensor maps for the copy engine (sm_90a): what `cuTensorMapEncodeTiled` is given for a kernel's
//! `abi::TensorMap` and one launch's tensor, checked here first (the driver's rules: a 16-byte
//! aligned address, unit innermost stride, the other strides multiples of 16 bytes below 2^40,
//! sizes from 1 to 2^32). A tensor that breaks them gets no map: the launch passes
//! `maps_ready = 0` and the kernel copies with `cp.async` instead. A tensor of more axes than a
//! map has gets its outermost ones folded into one (`abi::TensorMap::folded`) when they are
//! contiguous with each other and their linear index fits an `i32` (the kernel's coordinate).

use tessera_compiler::DType;
use tessera_compiler::abi::{MAX_MAP_RANK as MAX_RANK, TENSOR_MAP_BYTES, TensorMap};

/// Most axes of a tensor argument (a launch's tensors have at most this many).
pub(crate) const SEEN_RANK: usize = crate::tensor::MAX_RANK;

/// A tensor argument as a launch saw it (sizes and strides in elements, outermost first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    pub ptr: u64,
    pub rank: usize,
    pub sizes: [u64; SEEN_RANK],
    pub strides: [i64; SEEN_RANK],
}

/// The arguments of `cuTensorMapEncodeTiled`, innermost axis first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Encoding {
    pub rank: usize,
    pub ptr: u64,
    pub dims: [u64; MAX_RANK],
    /// Byte strides of axes 1.. (innermost first).
    pub strides: [u64; MAX_RANK],
    pub boxes: [u32; MAX_RANK],
    pub swizzle: u32,
}

/// The encoding of map `m` over tensor `t` of `dtype`, or `None` if the copy engine cannot
/// read it.
pub(crate) fn encoding(m: &TensorMap, dtype: DType, t: &Seen) -> Option<Encoding> {
    let folded = m.folded();
    if t.rank == 0 || t.rank > SEEN_RANK || m.boxes.len() != t.rank || !t.ptr.is_multiple_of(16) {
        return None;
    }
    // The folded axes as one: contiguous with each other, boxes of 1, sizes whose product (the
    // kernel computes coordinates on it in i32) fits.
    let (mut sizes, mut strides, mut boxes) = (t.sizes, t.strides, [1u32; SEEN_RANK]);
    boxes[..t.rank].copy_from_slice(&m.boxes);
    if folded > 0 {
        // The folded axis steps by the stride of the innermost folded axis of more than one
        // element, and each outer one of more than one element by that times the sizes inside
        // it (an axis of one element has any stride: views make such strides up). All of them
        // of one element: one step over the next axis.
        let mut step: Option<i64> = None;
        let mut n = 1u64;
        for a in (0..folded).rev() {
            if boxes[a] != 1 {
                return None;
            }
            if t.sizes[a] > 1 {
                match step {
                    None => step = Some(t.strides[a]),
                    Some(st) => {
                        if i64::try_from(n).ok().and_then(|n| n.checked_mul(st)) != Some(t.strides[a]) {
                            return None;
                        }
                    }
                }
            }
            n = n.checked_mul(t.sizes[a])?;
        }
        let step = match step {
            Some(st) => st,
            None => i64::try_from(t.sizes[folded]).ok()?.checked_mul(t.strides[folded])?,
        };
        if n > i32::MAX as u64 {
            return None;
        }
        sizes.copy_within(folded..t.rank, 1);
        strides.copy_within(folded..t.rank, 1);
        boxes.copy_within(folded..t.rank, 1);
        (sizes[0], strides[0], boxes[0]) = (n, step, 1);
    }
    let rank = m.map_rank();
    let es = dtype.size() as u64;
    let mut e = Encoding { rank, ptr: t.ptr, dims: [1; MAX_RANK], strides: [0; MAX_RANK], boxes: [1; MAX_RANK], swizzle: m.swizzle };
    for k in 0..rank {
        let axis = rank - 1 - k;
        let n = sizes[axis];
        if n == 0 || n > 1 << 32 {
            return None;
        }
        e.dims[k] = n;
        e.boxes[k] = boxes[axis];
        let s = strides[axis];
        if k == 0 {
            if s != 1 {
                return None;
            }
        } else {
            let bytes = u64::try_from(s).ok()?.checked_mul(es)?;
            if bytes == 0 || !bytes.is_multiple_of(16) || bytes >= 1 << 40 {
                return None;
            }
            e.strides[k - 1] = bytes;
        }
    }
    Some(e)
}

/// Encodes a tensor map through the driver; `None` if it refuses.
pub(crate) fn encode(e: &Encoding, dtype: DType) -> Option<[u8; TENSOR_MAP_BYTES as usize]> {
    use cudarc::driver::sys;
    let data = match dtype {
        DType::BF16 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
        DType::F16 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
        // Window reductions (`store_add`) of f32 accumulators.
        DType::F32 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
        _ => return None,
    };
    let swizzle = match e.swizzle {
        0 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_NONE,
        32 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_32B,
        64 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_64B,
        128 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
        _ => return None,
    };
    let mut map = sys::CUtensorMap { opaque: [0; 16] };
    let ones = [1u32; MAX_RANK];
    // SAFETY: every pointer is to a live local of the length the rank says (`strides` has rank -
    // 1 entries in use), `map` is a properly aligned `CUtensorMap`, and the global address is
    // only recorded in the map (the copy engine reads it when a kernel runs, while the launch
    // borrows the tensor).
    let r = unsafe {
        sys::cuTensorMapEncodeTiled(
            &mut map,
            data,
            e.rank as u32,
            e.ptr as *mut std::ffi::c_void,
            e.dims.as_ptr(),
            e.strides.as_ptr(),
            e.boxes.as_ptr(),
            ones.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            swizzle,
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    if r != sys::CUresult::CUDA_SUCCESS {
        return None;
    }
    let mut out = [0u8; TENSOR_MAP_BYTES as usize];
    for (chunk, w) in out.chunks_exact_mut(8).zip(map.opaque) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(ptr: u64, sizes: &[u64], strides: &[i64]) -> Seen {
        let mut t = Seen { ptr, rank: sizes.len(), ..Seen::default() };
        t.sizes[..sizes.len()].copy_from_slice(sizes);
        t.strides[..strides.len()].copy_from_slice(strides);
        t
    }

    /// Axes reversed (innermost first), byte strides of the outer axes; what the copy engine
    /// cannot take has no encoding.
    #[test]
    fn encodings_follow_the_copy_engine_rules() {
        let m = TensorMap { param: 0, boxes: vec![1, 64, 64], swizzle: 128 };
        let e = encoding(&m, DType::BF16, &seen(4096, &[3, 100, 256], &[25600, 256, 1])).expect("encodable");
        assert_eq!((e.rank, &e.dims[..3], &e.strides[..2], &e.boxes[..3]), (3, &[256, 100, 3][..], &[512, 51200][..], &[64, 64, 1][..]));
        // Misaligned address, a row stride of 77 elements (154 bytes), a transposed view, an
        // empty tensor, a rank that is not the map's.
        assert_eq!(encoding(&m, DType::BF16, &seen(4104, &[3, 100, 256], &[25600, 256, 1])), None);
        assert_eq!(encoding(&m, DType::BF16, &seen(4096, &[3, 100, 77], &[7700, 77, 1])), None);
        assert_eq!(encoding(&m, DType::BF16, &seen(4096, &[3, 100, 256], &[25600, 1, 100])), None);
        assert_eq!(encoding(&m, DType::BF16, &seen(4096, &[3, 0, 256], &[0, 256, 1])), None);
        assert_eq!(encoding(&m, DType::BF16, &seen(4096, &[100, 256], &[256, 1])), None);
    }

    /// A tensor of six axes folds its two outermost into one when they are contiguous with each
    /// other (a size-1 axis's stride does not matter); else, or when the folded axis passes
    /// i32, none.
    #[test]
    fn six_axes_fold_their_outermost_two() {
        let m = TensorMap { param: 0, boxes: vec![1, 1, 1, 2, 16, 64], swizzle: 128 };
        assert_eq!((m.folded(), m.map_rank()), (2, 5));
        let sizes = [2, 8, 16, 32, 32, 64];
        let strides = [8 * 16 * 32 * 32 * 64, 16 * 32 * 32 * 64, 32 * 32 * 64, 32 * 64, 64, 1];
        let e = encoding(&m, DType::BF16, &seen(4096, &sizes, &strides)).expect("encodable");
        assert_eq!(e.rank, 5);
        assert_eq!(&e.dims[..5], &[64, 32, 32, 16, 16]);
        assert_eq!(&e.strides[..4], &[128, 128 * 32, 128 * 32 * 32, 128 * 32 * 32 * 16]);
        assert_eq!(&e.boxes[..5], &[64, 16, 2, 1, 1]);
        // Heads outermost in memory (a transposed view): the two axes are not one.
        let swapped = [16 * 32 * 32 * 64, 2 * 16 * 32 * 32 * 64, 32 * 32 * 64, 32 * 64, 64, 1];
        assert_eq!(encoding(&m, DType::BF16, &seen(4096, &sizes, &swapped)), None);
        // One batch: its stride is anything.
        let one = encoding(&m, DType::BF16, &seen(4096, &[1, 8, 16, 32, 32, 64], &[7, 16 * 32 * 32 * 64, 32 * 32 * 64, 32 * 64, 64, 1]));
        assert_eq!(one.map(|e| e.dims[4]), Some(8));
        // Two batches of one head each (the head's stride made up): the batch's stride steps.
        let heads1 = encoding(&m, DType::BF16, &seen(4096, &[2, 1, 16, 32, 32, 64], &[16 * 32 * 32 * 64, 3, 32 * 32 * 64, 32 * 64, 64, 1]));
        assert_eq!(heads1.map(|e| (e.dims[4], e.strides[3])), Some((2, 128 * 32 * 32 * 16)));
        // Nothing but ones: the folded axis steps over the next axis.
        let ones = encoding(&m, DType::BF16, &seen(4096, &[1, 1, 16, 32, 32, 64], &[5, 3, 32 * 32 * 64, 32 * 64, 64, 1]));
        assert_eq!(ones.map(|e| (e.dims[4], e.strides[3])), Some((1, 128 * 32 * 32 * 16)));
        // 2^16 · 2^16 rows of the folded axis pass i32.
        let big = encoding(&m, DType::BF16, &seen(4096, &[1 << 16, 1 << 16, 1, 1, 1, 64], &[1 << 22, 64, 64, 64, 64, 1]));
        assert_eq!(big, None);
        // The folded axes' boxes must be 1.
        let wide = TensorMap { param: 0, boxes: vec![2, 1, 1, 2, 16, 64], swizzle: 128 };
        assert_eq!(encoding(&wide, DType::BF16, &seen(4096, &sizes, &strides)), None);
    }
}
