//! Care for the user's files: every output is written atomically ([`atomic`]: a crash or Ctrl-C
//! never leaves a half-written file), and no output replaces an input, another output or an
//! existing file the user did not name with `--force` ([`guard`]).

pub mod atomic;
pub mod guard;

pub use atomic::write_atomic;
