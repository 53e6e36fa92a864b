//! Minimal `.npy` / `.npz` reading and writing (NumPy format 1.0-3.0), for `policyctl
//! predict`, replay output and reference data in tests. Arrays are read as f32 whatever
//! their stored numeric type (`f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1`), little- or big-endian,
//! C or Fortran order.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn, ShapeBuilder};

/// Errors naming the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a .npy file: {detail}", path.display())]
    Format { path: PathBuf, detail: String },
    #[error("{}: unsupported dtype `{descr}`", path.display())]
    Dtype { path: PathBuf, descr: String },
    #[error("{}: {detail}", path.display())]
    Zip { path: PathBuf, detail: String },
}

/// Reads a `.npy` file as f32.
pub fn read_npy(path: impl AsRef<Path>) -> Result<ArrayD<f32>, NpyError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_npy(&bytes, path)
}

/// Parses `.npy` bytes as f32; `path` only names the source in errors.
pub fn parse_npy(bytes: &[u8], path: &Path) -> Result<ArrayD<f32>, NpyError> {
    let fmt = |detail: &str| NpyError::Format {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    };
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(fmt("missing the \\x93NUMPY magic"));
    }
    let major = bytes[6];
    let (header_len, start): (usize, usize) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(fmt("truncated header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        _ => return Err(fmt(&format!("unknown format version {major}"))),
    };
    let end = start
        .checked_add(header_len)
        .filter(|e| *e <= bytes.len())
        .ok_or_else(|| fmt("truncated header"))?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| fmt("header is not text"))?;
    let descr = dict_value(header, "descr").ok_or_else(|| fmt("header has no descr"))?;
    let quote = descr
        .chars()
        .next()
        .filter(|c| *c == '\'' || *c == '"')
        .ok_or_else(|| fmt("descr is not a string"))?;
    let descr = descr[1..]
        .split(quote)
        .next()
        .unwrap_or_default()
        .to_string();
    let fortran = dict_value(header, "fortran_order").is_some_and(|v| v.starts_with("True"));
    let shape_txt = dict_value(header, "shape").ok_or_else(|| fmt("header has no shape"))?;
    let inner = shape_txt.trim().trim_start_matches('(');
    let inner = &inner[..inner.find(')').ok_or_else(|| fmt("bad shape"))?];
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| fmt("bad shape")))
        .collect::<Result<_, _>>()?;
    // Bounded before anything is sized by it (see `crate::shape`).
    let count =
        crate::shape::check_shape(&shape).map_err(|e| fmt(&format!("shape {shape:?} {e}")))?;
    let data = &bytes[end..];
    // The byte order is the first character; `get` also refuses a non-ASCII one.
    let (endian, kind) = match descr.get(..1) {
        Some(e) => (e, &descr[1..]),
        None => ("", descr.as_str()),
    };
    let little = match endian {
        "<" | "|" | "=" => true,
        ">" => false,
        _ => {
            return Err(NpyError::Dtype {
                path: path.to_path_buf(),
                descr,
            })
        }
    };
    let size: usize = kind.get(1..).and_then(|s| s.parse().ok()).unwrap_or(0);
    let need = count
        .checked_mul(size)
        .ok_or_else(|| fmt("shape overflows"))?;
    if size == 0 || data.len() < need {
        return Err(if size == 0 {
            NpyError::Dtype {
                path: path.to_path_buf(),
                descr,
            }
        } else {
            fmt(&format!(
                "data holds {} bytes, shape {:?} of {descr} needs {need}",
                data.len(),
                shape
            ))
        });
    }
    let word = |i: usize| -> [u8; 8] {
        let mut w = [0u8; 8];
        let b = &data[i * size..(i + 1) * size];
        if little {
            w[..size].copy_from_slice(b);
        } else {
            for (j, x) in b.iter().rev().enumerate() {
                w[j] = *x;
            }
        }
        w
    };
    let conv: Box<dyn Fn([u8; 8]) -> f32> = match kind {
        "f2" => Box::new(|w| half::f16::from_le_bytes([w[0], w[1]]).to_f32()),
        "f4" => Box::new(|w| f32::from_le_bytes([w[0], w[1], w[2], w[3]])),
        "f8" => Box::new(|w| f64::from_le_bytes(w) as f32),
        "i1" => Box::new(|w| f32::from(w[0] as i8)),
        "i2" => Box::new(|w| f32::from(i16::from_le_bytes([w[0], w[1]]))),
        "i4" => Box::new(|w| i32::from_le_bytes([w[0], w[1], w[2], w[3]]) as f32),
        "i8" => Box::new(|w| i64::from_le_bytes(w) as f32),
        "u1" | "b1" => Box::new(|w| f32::from(w[0])),
        "u2" => Box::new(|w| f32::from(u16::from_le_bytes([w[0], w[1]]))),
        "u4" => Box::new(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as f32),
        "u8" => Box::new(|w| u64::from_le_bytes(w) as f32),
        _ => {
            return Err(NpyError::Dtype {
                path: path.to_path_buf(),
                descr,
            })
        }
    };
    let values: Vec<f32> = (0..count).map(|i| conv(word(i))).collect();
    let dim = IxDyn(&shape);
    let arr = if fortran {
        ArrayD::from_shape_vec(dim.f(), values)
    } else {
        ArrayD::from_shape_vec(dim, values)
    };
    arr.map_err(|e| fmt(&e.to_string()))
}

fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let i = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[i + key.len() + 2..];
    let colon = rest.find(':')?;
    Some(rest[colon + 1..].trim_start())
}

/// An array to store: f32, f64 or i64 data with a shape.
pub enum NpyData<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    I64(&'a [i64]),
}

/// Encodes one array as `.npy` bytes (format 1.0, little-endian, C order).
pub fn encode_npy(shape: &[usize], data: NpyData<'_>) -> Vec<u8> {
    let descr = match data {
        NpyData::F32(_) => "<f4",
        NpyData::F64(_) => "<f8",
        NpyData::I64(_) => "<i8",
    };
    let shape_txt = match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_txt}, }}");
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    match data {
        NpyData::F32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        NpyData::F64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        NpyData::I64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
    }
    out
}

/// Writes a `.npz` (uncompressed zip of `.npy` members) to any seekable writer. Entries are
/// written with a fixed timestamp, so equal inputs give byte-identical files.
pub fn write_npz<W: Write + Seek>(
    writer: W,
    arrays: &[(&str, Vec<usize>, NpyData<'_>)],
) -> Result<W, zip::result::ZipError> {
    let mut zip = zip::ZipWriter::new(writer);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default());
    for (name, shape, data) in arrays {
        let bytes = encode_npy(
            shape,
            match data {
                NpyData::F32(v) => NpyData::F32(v),
                NpyData::F64(v) => NpyData::F64(v),
                NpyData::I64(v) => NpyData::I64(v),
            },
        );
        zip.start_file(format!("{name}.npy"), opts)?;
        zip.write_all(&bytes)?;
    }
    zip.finish()
}

/// Reads every member of a `.npz` as f32 arrays, by name (without `.npy`).
pub fn read_npz(path: impl AsRef<Path>) -> Result<Vec<(String, ArrayD<f32>)>, NpyError> {
    let path = path.as_ref();
    let zerr = |e: zip::result::ZipError| NpyError::Zip {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(|source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut zip = zip::ZipArchive::new(file).map_err(zerr)?;
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).map_err(zerr)?;
        let name = f.name().trim_end_matches(".npy").to_string();
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).map_err(|source| NpyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        out.push((name.clone(), parse_npy(&bytes, &path.join(&name))?));
    }
    Ok(out)
}

/// Helper: a `Seek`-able in-memory buffer for [`write_npz`].
pub fn npz_bytes(
    arrays: &[(&str, Vec<usize>, NpyData<'_>)],
) -> Result<Vec<u8>, zip::result::ZipError> {
    Ok(write_npz(std::io::Cursor::new(Vec::new()), arrays)?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trip() {
        let bytes = encode_npy(&[2, 3], NpyData::F32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        assert_eq!((bytes.len() - 24) % 64, 0, "header padded to 64 bytes");
        let a = parse_npy(&bytes, Path::new("x.npy")).unwrap();
        assert_eq!(a.shape(), &[2, 3]);
        assert_eq!(a[[1, 2]], 6.0);
        let b = parse_npy(&encode_npy(&[2], NpyData::I64(&[-3, 7])), Path::new("y")).unwrap();
        assert_eq!(b.as_slice().unwrap(), &[-3.0, 7.0]);
    }

    #[test]
    fn bad_npy_names_the_file() {
        let e = parse_npy(b"hello world", Path::new("in.npy"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("in.npy") && e.contains("magic"), "{e}");
        let mut bytes = encode_npy(&[4], NpyData::F64(&[1.0; 4]));
        bytes.truncate(bytes.len() - 3);
        let e = parse_npy(&bytes, Path::new("t.npy"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs 32"), "{e}");
    }

    /// `.npy` bytes with any header dictionary (format 1.0) followed by `data`.
    fn with_header(dict: &str, data: &[u8]) -> Vec<u8> {
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((dict.len() as u16).to_le_bytes());
        out.extend(dict.as_bytes());
        out.extend(data);
        out
    }

    /// A header claiming an enormous array is refused by the shape limits before anything is
    /// sized by it, and a header the parser cannot make sense of is an error, not a panic.
    #[test]
    fn enormous_and_odd_headers_are_errors() {
        let e = parse_npy(
            &with_header(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 1099511627776, 1099511627776), }",
                &[0; 8],
            ),
            Path::new("in.npy"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("in.npy") && e.contains("MAX_DIM"), "{e}");
        let e = parse_npy(
            &with_header(
                "{'descr': '|u1', 'fortran_order': False, 'shape': (3, 100000, 100000), }",
                &[0; 8],
            ),
            Path::new("in.npy"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("MAX_TENSOR_ELEMENTS"), "{e}");
        // A multi-byte first character in `descr` (the byte-order slot) panicked on slicing.
        let e = parse_npy(
            &with_header("{'descr': '\u{e9}4', 'shape': (1,), }", &[0; 8]),
            Path::new("in.npy"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("in.npy") && e.contains("dtype"), "{e}");
    }

    #[test]
    fn npz_is_deterministic_and_readable() {
        let arrays = [
            ("a", vec![2], NpyData::F32(&[1.0, 2.0])),
            ("stamp_ns", vec![1], NpyData::I64(&[5])),
        ];
        let x = npz_bytes(&arrays).unwrap();
        let y = npz_bytes(&arrays).unwrap();
        assert_eq!(x, y);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.npz");
        std::fs::write(&p, &x).unwrap();
        let r = read_npz(&p).unwrap();
        assert_eq!(r[0].0, "a");
        assert_eq!(r[1].1[[0]], 5.0);
    }
}
