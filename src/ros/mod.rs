//! ros layer
