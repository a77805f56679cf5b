//! The shoal tracker.
