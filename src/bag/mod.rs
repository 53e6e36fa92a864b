//! bag layer
