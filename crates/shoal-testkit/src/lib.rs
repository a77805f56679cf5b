//! Dev-only test kit for shoal.
