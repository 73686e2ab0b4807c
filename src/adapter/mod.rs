//! A trained adapter as a whole, one floor above the model (`sam`, which holds the `peft`
//! modules): its file (the tensors a run changed, tied to the base they were trained on),
//! folding it into the base's own weights (`merge`), and what a method trains (`count`).

pub mod count;
pub mod file;
pub mod merge;

pub use count::{ParamCounts, trainable_counts};
pub use file::{
    ADAPTER_VERSION, AdapterError, AdapterInfo, AdapterParts, load_with_adapter, open_adapter,
    read_adapter_info, save_adapter, save_adapter_on,
};
pub use merge::{MergeError, merge};
