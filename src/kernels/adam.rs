//! One Adam (or AdamW) update of a parameter in one parallel pass over its values. The composed
//! update in `train::optim` makes about a dozen passes over the parameter, one thread each; this
//! does the same f32 operations in the same order, so the results are equal bit for bit.

use rayon::prelude::*;

use super::zeros;

/// Values per parallel task.
const CHUNK: usize = 1 << 14;

/// The scalars of one step, in f32 as the composed update applies them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    pub lr: f32,
    pub beta1: f32,
    /// `1 − β1`, and so on: each computed in f64 and rounded once, like the composed update's.
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    /// `1 − β1^t` and `1 − β2^t`.
    pub bias_correction1: f32,
    pub bias_correction2: f32,
    pub eps: f32,
    pub decay: WeightDecay,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WeightDecay {
    None,
    /// Adam's L2 decay: `wd·θ` added to the gradient.
    Coupled(f32),
    /// AdamW's: θ scaled by `1 − lr·wd` (the factor given) before the update.
    Decoupled(f32),
}

impl AdamStep {
    /// `(θ', m', v')` for one value.
    #[inline(always)]
    fn update(&self, theta: f32, grad: f32, m: f32, v: f32) -> [f32; 3] {
        let (theta, grad) = match self.decay {
            WeightDecay::None => (theta, grad),
            WeightDecay::Coupled(wd) => (theta, grad + theta * wd),
            WeightDecay::Decoupled(keep) => (theta * keep, grad),
        };
        let m = m * self.beta1 + grad * self.one_minus_beta1;
        let v = v * self.beta2 + grad * grad * self.one_minus_beta2;
        let m_hat = m / self.bias_correction1;
        let v_hat = v / self.bias_correction2;
        [theta - m_hat / (v_hat.sqrt() + self.eps) * self.lr, m, v]
    }
}

/// `[θ', m', v']` concatenated, for θ, its gradient and its moments (all of one length).
pub(super) fn step(theta: &[f32], grad: &[f32], m: &[f32], v: &[f32], s: &AdamStep) -> Vec<f32> {
    let n = theta.len();
    assert!(
        grad.len() == n && m.len() == n && v.len() == n,
        "adam: lengths {n}, {}, {}, {}",
        grad.len(),
        m.len(),
        v.len()
    );
    let mut out = zeros(3 * n);
    let (theta_out, moments_out) = out.split_at_mut(n);
    let (m_out, v_out) = moments_out.split_at_mut(n);
    theta_out
        .par_chunks_mut(CHUNK)
        .zip(m_out.par_chunks_mut(CHUNK))
        .zip(v_out.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(chunk, ((theta_out, m_out), v_out))| {
            let range = chunk * CHUNK..(chunk * CHUNK + theta_out.len());
            let inputs = [theta, grad, m, v].map(|values| &values[range.clone()]);
            update_chunk(s, inputs, [theta_out, m_out, v_out]);
        });
    out
}

multiversion! {
    /// [`AdamStep::update`] over a chunk: `inputs` θ, gradient, m, v and `outputs` θ', m', v', all
    /// of one length. Vectorised (sqrt and division in AVX-512 instead of one value at a time:
    /// the same IEEE operations, so the same results).
    fn update_chunk(s: &AdamStep, inputs: [&[f32]; 4], outputs: [&mut [f32]; 3]) {
        let [theta, grad, m, v] = inputs;
        let [theta_out, m_out, v_out] = outputs;
        let n = theta_out.len();
        let (theta, grad, m, v) = (&theta[..n], &grad[..n], &m[..n], &v[..n]);
        let (m_out, v_out) = (&mut m_out[..n], &mut v_out[..n]);
        for i in 0..n {
            [theta_out[i], m_out[i], v_out[i]] = s.update(theta[i], grad[i], m[i], v[i]);
        }
    }
}
