//! Parameters by their official names: which key each parameter was loaded from, so that a model
//! (with or without PEFT modules) can be exported as a state dict, its gradients read by name,
//! and its trainable set chosen by name.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{Gradients, Tensor};

use super::to_raw;
use crate::checkpoint::StateDict;

/// Where a parameter comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// SAM's own tensors (the base checkpoint).
    Base,
    /// Tensors of the PEFT modules.
    Peft,
}

/// The official key of every parameter, by parameter id (ids survive optimiser steps and device
/// moves, so the names stay valid).
#[derive(Debug, Clone, Default)]
pub struct ParamNames {
    names: BTreeMap<ParamId, (String, Origin)>,
}

impl ParamNames {
    pub fn insert(&mut self, id: ParamId, key: String, origin: Origin) {
        self.names.insert(id, (key, origin));
    }

    pub fn get(&self, id: &ParamId) -> Option<(&str, Origin)> {
        self.names.get(id).map(|(k, o)| (k.as_str(), *o))
    }

    pub fn extend(&mut self, other: ParamNames) {
        self.names.extend(other.names);
    }
}

struct Exporter<'a, F> {
    names: &'a ParamNames,
    select: F,
    grads: Option<&'a Gradients>,
    out: StateDict,
    /// The first read the device failed; the visit skips every tensor after it.
    failure: Option<anyhow::Error>,
}

impl<F: FnMut(&str, Origin) -> bool> ModuleVisitor for Exporter<'_, F> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.failure.is_some() {
            return;
        }
        let Some((key, origin)) = self.names.get(&param.id) else {
            return;
        };
        if !(self.select)(key, origin) {
            return;
        }
        let tensor = match self.grads {
            None => Some(param.val()),
            Some(grads) => param.val().grad(grads),
        };
        if let Some(tensor) = tensor {
            match to_raw(tensor) {
                Ok(raw) => {
                    self.out.insert(key.to_string(), raw);
                }
                Err(e) => self.failure = Some(e.context(format!("reading {key}"))),
            }
        }
    }
}

impl<F> Exporter<'_, F> {
    fn finish(self) -> anyhow::Result<StateDict> {
        match self.failure {
            Some(e) => Err(e),
            None => Ok(self.out),
        }
    }
}

/// The named parameters of `module` that `select` keeps, by their official keys.
pub fn export<M: Module>(
    module: &M,
    names: &ParamNames,
    select: impl FnMut(&str, Origin) -> bool,
) -> anyhow::Result<StateDict> {
    let mut exporter = Exporter {
        names,
        select,
        grads: None,
        out: StateDict::new(),
        failure: None,
    };
    module.visit(&mut exporter);
    exporter.finish()
}

/// The gradients in `grads` of the named parameters of `module` that have one.
pub fn gradients<M: Module>(
    module: &M,
    names: &ParamNames,
    grads: &Gradients,
) -> anyhow::Result<StateDict> {
    let mut exporter = Exporter {
        names,
        select: |_: &str, _: Origin| true,
        grads: Some(grads),
        out: StateDict::new(),
        failure: None,
    };
    module.visit(&mut exporter);
    exporter.finish()
}

struct Trainable<'a, F> {
    names: &'a ParamNames,
    trainable: F,
}

impl<F: FnMut(&str, Origin) -> bool> ModuleMapper for Trainable<'_, F> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let train = self
            .names
            .get(&param.id)
            .is_some_and(|(key, origin)| (self.trainable)(key, origin));
        param.set_require_grad(train)
    }
}

/// Sets which parameters of `module` require gradients; unnamed ones are frozen.
pub fn set_trainable<M: Module>(
    module: M,
    names: &ParamNames,
    trainable: impl FnMut(&str, Origin) -> bool,
) -> M {
    module.map(&mut Trainable { names, trainable })
}
