//! Buffer helpers the kernels share: inputs made contiguous and checked, outputs zeroed or filled
//! by the worker threads, and the shared output that parallel tasks write in disjoint parts.

use burn::tensor::TensorData;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::attention::{Geometry, Inputs};

/// The geometry of a [`CpuKernels::rel_pos_attention`] call, and its inputs made contiguous.
pub(super) fn attention_inputs(
    tensors: [FlexTensor; 4],
    heads: usize,
) -> (Geometry, [FlexTensor; 4]) {
    let [qkv, pad, rel_h, rel_w] = tensors.map(contiguous);
    let dims = |t: &FlexTensor| t.layout().shape().to_vec();
    let (q, h, w) = (dims(&qkv), dims(&rel_h), dims(&rel_w));
    assert!(
        q.len() == 4 && h.len() == 3 && w.len() == 3 && heads > 0 && q[3] % (3 * heads) == 0,
        "rel_pos_attention: qkv {q:?}, rel_h {h:?}, rel_w {w:?}, {heads} heads"
    );
    let geo = Geometry {
        b: q[0],
        h: q[1],
        w: q[2],
        heads,
        hd: q[3] / (3 * heads),
        wh: h[0],
        ww: w[0],
    };
    (geo, [qkv, pad, rel_h, rel_w])
}

pub(super) fn inputs<'a>(
    qkv: &'a FlexTensor,
    pad: &'a FlexTensor,
    rel_h: &'a FlexTensor,
    rel_w: &'a FlexTensor,
) -> Inputs<'a> {
    Inputs {
        qkv: f32s(qkv),
        pad: f32s(pad),
        rel_h: f32s(rel_h),
        rel_w: f32s(rel_w),
    }
}

/// `vec![0.0; len]`, zeroed by the worker threads: `vec!` zeroes a reused allocation on the
/// calling thread, and the outputs of a training step's kernels add up to tens of megabytes.
pub(super) fn zeros(len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(1 << 16)
        .for_each(|chunk| chunk.fill(std::mem::MaybeUninit::new(0.0)));
    // SAFETY: the first `len` values were all written just above.
    unsafe { v.set_len(len) };
    v
}

/// An output that parallel tasks write in disjoint parts: each task's part is its own by
/// construction, which the caller vouches for where it writes.
#[derive(Clone, Copy)]
pub(super) struct SharedOut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: the tasks write disjoint parts (each use says why), and the output outlives them (it
// is borrowed by the function that runs them).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    pub(super) fn new(out: &mut [f32]) -> Self {
        Self {
            ptr: out.as_mut_ptr(),
            len: out.len(),
        }
    }

    /// `offset` values in (by value, so closures capture the whole `Send` wrapper).
    pub(super) fn at(self, offset: usize) -> *mut f32 {
        assert!(offset <= self.len, "offset out of the output");
        self.ptr.wrapping_add(offset)
    }

    /// Copies `values` to `offset..offset + values.len()`.
    ///
    /// # Safety
    /// No other task reads or writes those values meanwhile.
    pub(super) unsafe fn write(self, offset: usize, values: &[f32]) {
        assert!(offset + values.len() <= self.len, "write out of the output");
        // SAFETY: in bounds (just checked); the caller vouches that no one else touches them.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), self.at(offset), values.len()) }
    }
}

/// `t` itself when its values are one run in its buffer (a slice of a larger buffer too: burn's
/// `to_contiguous` copies those), else a contiguous copy.
pub(super) fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.is_contiguous() {
        t
    } else {
        t.to_contiguous()
    }
}

/// `count` copies of `row` end to end, written by the worker threads (`repeat` writes on the
/// calling thread).
pub(super) fn repeat_rows(row: &[f32], count: usize) -> Vec<f32> {
    let len = row.len() * count;
    let mut v = Vec::with_capacity(len);
    if len > 0 {
        v.spare_capacity_mut()[..len]
            .par_chunks_mut(row.len())
            .for_each(|copy| {
                copy.write_copy_of_slice(row);
            });
    }
    // SAFETY: the first `len` values were all written just above (whole copies of `row`).
    unsafe { v.set_len(len) };
    v
}

/// The values of a contiguous f32 tensor.
pub(super) fn f32s(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("fused kernels take contiguous f32 tensors")
}

pub(super) fn flex(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// `[m, k, n]` of a linear: `x` `[m, k]`, `weight` `[n, k]`.
pub(super) fn linear_dims(x: &FlexTensor, weight: &FlexTensor) -> [usize; 3] {
    let (x, w) = (x.layout().shape(), weight.layout().shape());
    assert!(
        x.num_dims() == 2 && w.num_dims() == 2 && x[1] == w[1],
        "linear: x {:?}, weight {:?}",
        x.to_vec(),
        w.to_vec()
    );
    [x[0], x[1], w[0]]
}
