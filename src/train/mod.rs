//! Training: losses (the loop, optimisers and schedules build on these).

pub mod loss;
pub mod optim;
pub mod plot;
pub mod schedule;
pub mod trainer;
