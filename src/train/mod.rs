//! Training: losses, optimisers, schedules, the fine-tuning loop ([`trainer`]) and pretraining
//! from random weights on generated scenes ([`pretrain`]), and the run folders both write
//! ([`run_dir`]) with the state they record ([`run_state`]).

pub mod embedding_cache;
pub mod loss;
pub mod optim;
pub mod plot;
pub mod pretrain;
pub mod run_dir;
pub mod run_state;
pub mod schedule;
pub mod step_log;
pub mod trainer;
