//! Training: losses, optimisers, schedules, the fine-tuning loop ([`trainer`]) and pretraining
//! from random weights on generated scenes ([`pretrain`]).

pub mod loss;
pub mod optim;
pub mod plot;
pub mod pretrain;
pub mod schedule;
pub mod trainer;
