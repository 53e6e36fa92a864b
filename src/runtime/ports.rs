//! Named `f32` arrays <-> a model port's element type: the conversions every adapter needs and
//! the checks that go with them, in one place.
//!
//! Tensors cross the [`RuntimeAdapter`](super::RuntimeAdapter) trait as `f32`. A port of another
//! type gets its values converted on the way in and widened back to `f32` on the way out:
//!
//! - `f16` / `bf16`: rounded to nearest (IEEE); values beyond the range become infinities, as
//!   the runtimes' own conversions do;
//! - `f64`: exact;
//! - integers (`i64`, `i32`, `u8`): truncated toward zero (as NumPy's `astype` and torch's `.to`
//!   do); a value that is not finite or whose truncation does not fit the type is an error
//!   naming the tensor, the element and the type, never a silent wrap-around. `i64` ports take
//!   the `i32` range, `[-2^31, 2^31)`: OpenVINO's CPU plugin computes `i64` in `i32` and would
//!   wrap anything beyond it (1e12 + 1 came back as -727384060), so the range every backend
//!   computes exactly is the rule for all of them (an `f32` holds integers exactly only up to
//!   2^24 anyway);
//! - `bool`: `v != 0`; NaN is an error.
//!
//! Every adapter converts integer and boolean inputs here (ONNX Runtime, OpenVINO, TorchScript,
//! and the remote wire format below), so a value gives the same result, or the same error,
//! whichever backend runs the model; `tests/conformance.rs` feeds each backend non-whole,
//! huge and negative values to hold them to it.
//!
//! The wire form of the remote backend (the KServe v2 protocol's raw, little-endian, row-major
//! bytes) is encoded and decoded here too ([`encode_le`], [`decode_le`]), so a value converts the
//! same whether the model runs in-process or on a server.

use half::f16;
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
use ndarray::ArrayViewD;

use super::DType;

/// An `f32` value that does not convert to a port's element type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "input `{tensor}`: element {index} is {value}, which cannot be converted to {dtype} (the \
     model port's type)"
)]
pub struct ConversionError {
    /// The input tensor.
    pub tensor: String,
    /// Flat index (logical, row-major order) of the offending element.
    pub index: usize,
    pub value: f32,
    pub dtype: DType,
}

/// A port element type whose values cross the trait as `f32`.
pub trait PortElement: Copy {
    /// The type as [`DType`] names it.
    const DTYPE: DType;
    /// The port value for `v`, or `None` when `v` cannot be represented (see the module docs).
    fn from_f32(v: f32) -> Option<Self>;
    /// The value as `f32` (integers beyond 2^24 lose precision, as any f32 does).
    fn to_f32(self) -> f32;
}

impl PortElement for f32 {
    const DTYPE: DType = DType::F32;
    #[inline]
    fn from_f32(v: f32) -> Option<Self> {
        Some(v)
    }
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
}

impl PortElement for f64 {
    const DTYPE: DType = DType::F64;
    #[inline]
    fn from_f32(v: f32) -> Option<Self> {
        Some(f64::from(v))
    }
    #[inline]
    fn to_f32(self) -> f32 {
        self as f32
    }
}

impl PortElement for f16 {
    const DTYPE: DType = DType::F16;
    #[inline]
    fn from_f32(v: f32) -> Option<Self> {
        Some(f16::from_f32(v))
    }
    #[inline]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

/// Truncates toward zero and checks `[min, max_excl)`; the bounds are powers of two (or zero),
/// exact in `f32`, so the comparison is exact.
#[inline]
fn truncated(v: f32, min: f32, max_excl: f32) -> Option<f32> {
    let t = v.trunc();
    (v.is_finite() && t >= min && t < max_excl).then_some(t)
}

impl PortElement for i64 {
    const DTYPE: DType = DType::I64;
    #[inline]
    fn from_f32(v: f32) -> Option<Self> {
        // [-2^31, 2^31): see the module docs.
        truncated(v, -2_147_483_648.0, 2_147_483_648.0).map(|t| t as i64)
    }
    #[inline]
    fn to_f32(self) -> f32 {
        self as f32
    }
}

impl PortElement for i32 {
    const DTYPE: DType = DType::I32;
    #[inline]
    fn from_f32(v: f32) -> Option<Self> {
        truncated(v, -2_147_483_648.0, 2_147_483_648.0).map(|t| t as i32)
    }
    #[inline]
    fn to_f32(self) -> f32 {
        self as f32
    }
}

impl PortElement for u8 {
    const DTYPE: DType = DType::U8;
    #[inline]
    fn from_f32(v: f32) -> Option<Self> {
        truncated(v, 0.0, 256.0).map(|t| t as u8)
    }
    #[inline]
    fn to_f32(self) -> f32 {
        f32::from(self)
    }
}

impl PortElement for bool {
    const DTYPE: DType = DType::Bool;
    #[inline]
    fn from_f32(v: f32) -> Option<Self> {
        (!v.is_nan()).then_some(v != 0.0)
    }
    #[inline]
    fn to_f32(self) -> f32 {
        if self {
            1.0
        } else {
            0.0
        }
    }
}

/// Converts `src` (any memory layout, read in logical row-major order) into `dst`, element by
/// element. `dst` must hold `src.len()` values; extra ones are left as they are.
pub fn convert_into<T: PortElement>(
    dst: &mut [T],
    src: &ArrayViewD<'_, f32>,
    tensor: &str,
) -> Result<(), ConversionError> {
    let bad = |index: usize, value: f32| ConversionError {
        tensor: tensor.to_string(),
        index,
        value,
        dtype: T::DTYPE,
    };
    match src.as_slice() {
        Some(s) => {
            for (i, (d, v)) in dst.iter_mut().zip(s).enumerate() {
                *d = T::from_f32(*v).ok_or_else(|| bad(i, *v))?;
            }
        }
        None => {
            for (i, (d, v)) in dst.iter_mut().zip(src.iter()).enumerate() {
                *d = T::from_f32(*v).ok_or_else(|| bad(i, *v))?;
            }
        }
    }
    Ok(())
}

/// Widens port values to `f32`.
pub fn widen<T: PortElement>(src: &[T]) -> Vec<f32> {
    src.iter().map(|v| v.to_f32()).collect()
}

/// Size in bytes of one element of `dtype`, for the types this module converts.
pub fn element_size(dtype: &DType) -> Option<usize> {
    Some(match dtype {
        DType::F32 | DType::I32 => 4,
        DType::F64 | DType::I64 => 8,
        DType::F16 => 2,
        DType::U8 | DType::Bool => 1,
        DType::Other(_) => return None,
    })
}

/// Why a wire buffer could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WireError {
    #[error(transparent)]
    Conversion(#[from] ConversionError),
    #[error("tensor `{tensor}` has element type {dtype}, which is not supported")]
    Unsupported { tensor: String, dtype: DType },
    #[error(
        "tensor `{tensor}`: {bytes} bytes of data for {elements} element(s) of {dtype} \
         ({expected} bytes expected)"
    )]
    Size {
        tensor: String,
        dtype: DType,
        elements: usize,
        bytes: usize,
        expected: usize,
    },
}

/// Appends `src` converted to `dtype` as little-endian bytes (row-major) to `out`.
pub fn encode_le(
    dtype: &DType,
    src: &ArrayViewD<'_, f32>,
    tensor: &str,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    fn put<T: PortElement, const N: usize>(
        src: &ArrayViewD<'_, f32>,
        tensor: &str,
        out: &mut Vec<u8>,
        bytes: impl Fn(T) -> [u8; N],
    ) -> Result<(), WireError> {
        out.reserve(src.len() * N);
        for (i, v) in src.iter().enumerate() {
            let x = T::from_f32(*v).ok_or_else(|| ConversionError {
                tensor: tensor.to_string(),
                index: i,
                value: *v,
                dtype: T::DTYPE,
            })?;
            out.extend_from_slice(&bytes(x));
        }
        Ok(())
    }
    match dtype {
        DType::F32 => match src.as_slice() {
            // The common case: one pass, no per-element work beyond the byte order.
            Some(s) => {
                out.extend_from_slice(f32_bytes_le(s).as_ref());
                Ok(())
            }
            None => put::<f32, 4>(src, tensor, out, f32::to_le_bytes),
        },
        DType::F16 => {
            let start = out.len();
            let n = src.len();
            out.resize(start + 2 * n, 0);
            let mut halves = vec![f16::ZERO; n];
            match src.as_slice() {
                Some(s) => halves.convert_from_f32_slice(s),
                None => halves
                    .iter_mut()
                    .zip(src.iter())
                    .for_each(|(d, v)| *d = f16::from_f32(*v)),
            }
            for (chunk, h) in out[start..].chunks_exact_mut(2).zip(&halves) {
                chunk.copy_from_slice(&h.to_le_bytes());
            }
            Ok(())
        }
        DType::F64 => put::<f64, 8>(src, tensor, out, f64::to_le_bytes),
        DType::I64 => put::<i64, 8>(src, tensor, out, i64::to_le_bytes),
        DType::I32 => put::<i32, 4>(src, tensor, out, i32::to_le_bytes),
        DType::U8 => put::<u8, 1>(src, tensor, out, |v| [v]),
        DType::Bool => put::<bool, 1>(src, tensor, out, |v| [u8::from(v)]),
        DType::Other(_) => Err(WireError::Unsupported {
            tensor: tensor.to_string(),
            dtype: dtype.clone(),
        }),
    }
}

/// The bytes of `s` in little-endian order: the memory itself on little-endian hosts (one
/// copy for the whole tensor), converted element by element elsewhere.
fn f32_bytes_le(s: &[f32]) -> std::borrow::Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        // SAFETY: `f32` has no padding and every byte of it is initialised; the slice covers
        // exactly the memory of `s`, which outlives it, and `u8` has alignment 1.
        let bytes = unsafe {
            std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), std::mem::size_of_val(s))
        };
        std::borrow::Cow::Borrowed(bytes)
    } else {
        std::borrow::Cow::Owned(s.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
}

/// `f32` values from little-endian bytes (`bytes.len()` a multiple of 4).
fn f32_from_le(bytes: &[u8]) -> Vec<f32> {
    let n = bytes.len() / 4;
    if cfg!(target_endian = "little") {
        let mut out = vec![0.0f32; n];
        // SAFETY: `out` holds `n` f32 = `4 n` bytes, every bit pattern is a valid f32, and the
        // two buffers do not overlap; byte-wise copy needs no alignment of `bytes`.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.as_mut_ptr().cast::<u8>(), 4 * n);
        }
        out
    } else {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
}

/// Reads `elements` little-endian values of `dtype` from `bytes` as `f32`. The byte count must
/// match exactly.
pub fn decode_le(
    dtype: &DType,
    bytes: &[u8],
    elements: usize,
    tensor: &str,
) -> Result<Vec<f32>, WireError> {
    let Some(size) = element_size(dtype) else {
        return Err(WireError::Unsupported {
            tensor: tensor.to_string(),
            dtype: dtype.clone(),
        });
    };
    let expected = elements.saturating_mul(size);
    if bytes.len() != expected {
        return Err(WireError::Size {
            tensor: tensor.to_string(),
            dtype: dtype.clone(),
            elements,
            bytes: bytes.len(),
            expected,
        });
    }
    fn get<const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
        bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a)
            })
            .collect()
    }
    Ok(match dtype {
        DType::F32 => f32_from_le(bytes),
        DType::F16 => {
            let bits: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            let mut out = vec![0.0f32; elements];
            bits.reinterpret_cast::<f16>()
                .convert_to_f32_slice(&mut out);
            out
        }
        DType::F64 => get::<8>(bytes, |b| f64::from_le_bytes(b) as f32),
        DType::I64 => get::<8>(bytes, |b| i64::from_le_bytes(b) as f32),
        DType::I32 => get::<4>(bytes, |b| i32::from_le_bytes(b) as f32),
        DType::U8 => bytes.iter().map(|b| f32::from(*b)).collect(),
        DType::Bool => bytes.iter().map(|b| f32::from(u8::from(*b != 0))).collect(),
        DType::Other(_) => unreachable!("element_size is None for Other"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    fn arr(v: &[f32]) -> ArrayD<f32> {
        ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).unwrap()
    }

    #[test]
    fn integers_truncate_toward_zero_and_reject_what_does_not_fit() {
        let mut d = [0i64; 4];
        convert_into(&mut d, &arr(&[2.7, -2.7, 0.0, -0.5]).view(), "idx").unwrap();
        assert_eq!(d, [2, -2, 0, 0]);
        for bad in [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e19,
            -1e19,
            3e9,
            -1e12,
        ] {
            let e = convert_into(&mut d, &arr(&[0.0, 1.0, bad, 0.0]).view(), "idx").unwrap_err();
            assert_eq!((e.index, e.dtype.clone()), (2, DType::I64), "{bad}");
            let msg = e.to_string();
            assert!(
                msg.contains("`idx`") && msg.contains("element 2") && msg.contains("i64"),
                "{msg}"
            );
        }
        // The exact bounds: -2^31 fits, 2^31 does not (for i64 ports too, see the module docs).
        assert_eq!(i64::from_f32(-2_147_483_648.0), Some(-2_147_483_648));
        assert_eq!(i64::from_f32(-2_147_483_648.9), Some(-2_147_483_648));
        assert_eq!(i64::from_f32(2_147_483_520.0), Some(2_147_483_520));
        assert_eq!(i64::from_f32(2_147_483_648.0), None);
        assert_eq!(i32::from_f32(2_147_483_520.0), Some(2_147_483_520));
        assert_eq!(i32::from_f32(2_147_483_648.0), None);
        assert_eq!(u8::from_f32(255.9), Some(255));
        assert_eq!(u8::from_f32(256.0), None);
        assert_eq!(u8::from_f32(-0.9), Some(0));
        assert_eq!(u8::from_f32(-1.0), None);
        assert_eq!(bool::from_f32(f32::NAN), None);
        assert_eq!(bool::from_f32(-0.0), Some(false));
        assert_eq!(bool::from_f32(0.25), Some(true));
    }

    #[test]
    fn non_contiguous_sources_are_read_in_logical_order() {
        let wide =
            ArrayD::from_shape_vec(IxDyn(&[1, 6]), vec![1.0f32, 9.0, 2.0, 9.0, 3.0, 9.0]).unwrap();
        let view = wide.slice(ndarray::s![.., ..;2]).into_dyn();
        assert!(view.as_slice().is_none());
        let mut d = [0i32; 3];
        convert_into(&mut d, &view, "x").unwrap();
        assert_eq!(d, [1, 2, 3]);
        let mut bytes = Vec::new();
        encode_le(&DType::F32, &view, "x", &mut bytes).unwrap();
        assert_eq!(
            decode_le(&DType::F32, &bytes, 3, "x").unwrap(),
            vec![1.0, 2.0, 3.0]
        );
    }

    #[test]
    fn wire_round_trip_for_every_type() {
        let src = arr(&[0.5, -1.25, 3.0, 1000.0]);
        for (dtype, want) in [
            (DType::F32, vec![0.5, -1.25, 3.0, 1000.0]),
            (DType::F16, vec![0.5, -1.25, 3.0, 1000.0]),
            (DType::F64, vec![0.5, -1.25, 3.0, 1000.0]),
            (DType::I64, vec![0.0, -1.0, 3.0, 1000.0]),
            (DType::I32, vec![0.0, -1.0, 3.0, 1000.0]),
            (DType::Bool, vec![1.0, 1.0, 1.0, 1.0]),
        ] {
            let mut bytes = vec![0xAA]; // appended to, not overwritten
            encode_le(&dtype, &src.view(), "t", &mut bytes).unwrap();
            let size = element_size(&dtype).unwrap();
            assert_eq!(bytes.len(), 1 + 4 * size, "{dtype}");
            let back = decode_le(&dtype, &bytes[1..], 4, "t").unwrap();
            assert_eq!(back, want, "{dtype}");
        }
        // f32 bytes are the values' IEEE bits, little-endian, for any value.
        let odd = arr(&[f32::MIN_POSITIVE, -0.0, 1e-45, f32::MAX]);
        let mut bytes = Vec::new();
        encode_le(&DType::F32, &odd.view(), "t", &mut bytes).unwrap();
        let want: Vec<u8> = odd.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(bytes, want);
        let back = decode_le(&DType::F32, &bytes, 4, "t").unwrap();
        assert!(back
            .iter()
            .zip(odd.iter())
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        // Little-endian on the wire, whatever the host.
        let mut bytes = Vec::new();
        encode_le(&DType::I64, &arr(&[1.0]).view(), "t", &mut bytes).unwrap();
        assert_eq!(bytes, [1, 0, 0, 0, 0, 0, 0, 0]);
        let mut bytes = Vec::new();
        encode_le(&DType::F16, &arr(&[1.0]).view(), "t", &mut bytes).unwrap();
        assert_eq!(bytes, [0x00, 0x3C]);
        // u8: out-of-range values are refused while encoding.
        let e = encode_le(
            &DType::U8,
            &arr(&[1.0, 300.0]).view(),
            "img",
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("`img`") && e.to_string().contains("element 1"));
    }

    #[test]
    fn wrong_sizes_and_unsupported_types_are_errors() {
        let e = decode_le(&DType::F32, &[0u8; 10], 3, "action").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("`action`") && msg.contains("10 bytes") && msg.contains("12 bytes"),
            "{msg}"
        );
        let e = decode_le(&DType::Other("BYTES".into()), &[], 0, "s").unwrap_err();
        assert!(matches!(e, WireError::Unsupported { .. }), "{e}");
        let e = encode_le(
            &DType::Other("INT8".into()),
            &arr(&[1.0]).view(),
            "s",
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("INT8"), "{e}");
        assert_eq!(widen(&[1u8, 2]), vec![1.0, 2.0]);
        assert_eq!(widen(&[f16::from_f32(0.5)]), vec![0.5]);
    }
}
