//! Bounds on tensor shapes taken from files: export metadata (`input_shapes`,
//! `output_shapes`, `chunk_size`), the ports a runtime reports for a loaded model, and `.npy`
//! headers. Every buffer the node, replay or `policyctl` builds from such a shape is sized by
//! a shape that passed [`check_shape`] first, so a file that claims an enormous tensor is a
//! clear error naming the limit, never an allocation that aborts the process.
//!
//! | limit | value | why |
//! |---|---|---|
//! | [`MAX_RANK`] | 16 dimensions | policies use rank <= 5 (`[B, T, C, H, W]`) |
//! | [`MAX_DIM`] | 1,048,576 (2^20) per dimension | above any camera side, chunk or token count |
//! | [`MAX_TENSOR_ELEMENTS`] | 268,435,456 (2^28) per tensor | 1 GiB as `f32`; an 8K RGB frame is 2^25 |
//!
//! Dynamic dimensions (`None`, e.g. an ONNX `batch` axis) count as 1, as the buffers built
//! for them do.

use std::fmt;

/// Most dimensions a tensor may have.
pub const MAX_RANK: usize = 16;
/// Largest size of one dimension.
pub const MAX_DIM: usize = 1 << 20;
/// Most elements in one tensor (1 GiB as `f32`).
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 28;

/// Which bound a shape breaks. The message names the limit and its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("has {rank} dimensions, above the limit of {MAX_RANK} (MAX_RANK)")]
    Rank { rank: usize },
    #[error("dimension {index} is {size}, above the limit of {MAX_DIM} per dimension (MAX_DIM)")]
    Dim { index: usize, size: u64 },
    #[error(
        "shape {shape} has {elements} elements, above the limit of {MAX_TENSOR_ELEMENTS} \
         per tensor (MAX_TENSOR_ELEMENTS, {} MiB as f32)",
        (MAX_TENSOR_ELEMENTS * 4) >> 20
    )]
    Elements { shape: String, elements: String },
}

/// Checks a concrete shape against [`MAX_RANK`], [`MAX_DIM`] and [`MAX_TENSOR_ELEMENTS`];
/// returns its element count.
pub fn check_shape(shape: &[usize]) -> Result<usize, ShapeError> {
    check_dims(shape.iter().map(|d| *d as u64), shape.len(), || {
        Dims(shape.iter().map(|d| Some(*d as u64)).collect()).to_string()
    })
}

/// [`check_shape`] for a model port, whose dynamic dimensions (`None`) count as 1.
pub fn check_port_shape(shape: &[Option<usize>]) -> Result<usize, ShapeError> {
    check_dims(
        shape.iter().map(|d| d.map_or(1, |d| d as u64)),
        shape.len(),
        || Dims(shape.iter().map(|d| d.map(|d| d as u64)).collect()).to_string(),
    )
}

/// [`check_shape`] for dimensions as read from text or a header, before they are converted
/// to `usize` (so 2^40 on a 32-bit target is reported, not truncated).
pub fn check_dims_u64(shape: &[u64]) -> Result<usize, ShapeError> {
    check_dims(shape.iter().copied(), shape.len(), || {
        Dims(shape.iter().map(|d| Some(*d)).collect()).to_string()
    })
}

fn check_dims(
    dims: impl Iterator<Item = u64> + Clone,
    rank: usize,
    render: impl Fn() -> String,
) -> Result<usize, ShapeError> {
    if rank > MAX_RANK {
        return Err(ShapeError::Rank { rank });
    }
    if let Some((index, size)) = dims.clone().enumerate().find(|(_, d)| *d > MAX_DIM as u64) {
        return Err(ShapeError::Dim { index, size });
    }
    // Saturating: 16 dimensions of 2^20 would overflow even u128.
    let elements = dims.fold(1u64, |a, d| a.saturating_mul(d));
    if elements > MAX_TENSOR_ELEMENTS as u64 {
        return Err(ShapeError::Elements {
            shape: render(),
            elements: elements.to_string(),
        });
    }
    Ok(elements as usize)
}

/// `[3, ?, 224]`.
struct Dims(Vec<Option<u64>>);

impl fmt::Display for Dims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match d {
                Some(d) => write!(f, "{d}")?,
                None => f.write_str("?")?,
            }
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_shapes_pass() {
        assert_eq!(check_shape(&[3, 224, 224]), Ok(3 * 224 * 224));
        assert_eq!(check_shape(&[]), Ok(1));
        assert_eq!(check_shape(&[0, 5]), Ok(0));
        assert_eq!(check_port_shape(&[None, Some(100), Some(14)]), Ok(1400));
        // 8K RGB, and the largest tensor allowed.
        assert!(check_shape(&[3, 4320, 7680]).is_ok());
        assert_eq!(check_shape(&[1 << 8, 1 << 20]), Ok(MAX_TENSOR_ELEMENTS));
    }

    #[test]
    fn each_limit_is_named() {
        let e = check_shape(&[3, 100_000, 100_000]).unwrap_err();
        assert!(matches!(e, ShapeError::Elements { .. }), "{e:?}");
        let m = e.to_string();
        assert!(
            m.contains("[3, 100000, 100000]")
                && m.contains("30000000000 elements")
                && m.contains("MAX_TENSOR_ELEMENTS")
                && m.contains("268435456"),
            "{m}"
        );
        let e = check_dims_u64(&[3, 1 << 40, 1 << 40]).unwrap_err();
        assert_eq!(
            e,
            ShapeError::Dim {
                index: 1,
                size: 1 << 40
            }
        );
        assert!(
            e.to_string().contains("MAX_DIM") && e.to_string().contains("1048576"),
            "{e}"
        );
        let e = check_shape(&[1; 17]).unwrap_err();
        assert!(e.to_string().contains("MAX_RANK"), "{e}");
        // Products that overflow u64 are refused too.
        assert!(matches!(
            check_shape(&[MAX_DIM; 16]),
            Err(ShapeError::Elements { .. })
        ));
        assert!(check_port_shape(&[Some(1 << 21)]).is_err());
        assert!(check_port_shape(&[None; 17]).is_err());
    }
}
