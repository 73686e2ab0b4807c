//! SAM.
