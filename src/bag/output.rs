//! Replay output files: CSV or `.npz`, byte-for-byte deterministic, written to a temporary
//! file next to the target and renamed into place only when complete.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::BagError;

/// The output format, from the file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Csv,
    Npz,
}

impl OutputFormat {
    pub fn from_path(path: &Path) -> Result<Self, BagError> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("csv") => Ok(OutputFormat::Csv),
            Some("npz") => Ok(OutputFormat::Npz),
            _ => Err(BagError::OutputFormat {
                path: path.to_path_buf(),
            }),
        }
    }
}

/// The commanded actions of a replay: one row per tick that produced a command.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Actions {
    pub joint_names: Vec<String>,
    /// Bag time of each tick, nanoseconds.
    pub stamp_ns: Vec<i64>,
    /// `[stamp_ns.len()][joint_names.len()]`.
    pub values: Vec<Vec<f64>>,
}

/// Writes `path` through `write`: into `.<name>.<pid>.tmp` in the same directory, renamed to
/// `path` on success and removed on failure, so `path` is never left partial.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<(), BagError> {
    let tmp = temp_path(path);
    let out_err = |source| BagError::Output {
        path: path.to_path_buf(),
        source,
    };
    let result = (|| {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::new(file);
        write(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(out_err)
}

/// The temporary sibling used by [`write_atomically`].
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Writes the actions as `format` to `path` (atomically).
pub fn write_actions(path: &Path, format: OutputFormat, actions: &Actions) -> Result<(), BagError> {
    write_atomically(path, |w| match format {
        OutputFormat::Csv => write_csv(w, actions),
        OutputFormat::Npz => write_npz(w, actions),
    })
}

/// `stamp_ns,<joint>,...` then one row per command; floats in Rust's shortest round-trip
/// form (exact and deterministic).
pub fn write_csv(w: &mut impl Write, actions: &Actions) -> std::io::Result<()> {
    write!(w, "stamp_ns")?;
    for n in &actions.joint_names {
        write!(w, ",{}", csv_field(n))?;
    }
    writeln!(w)?;
    for (t, row) in actions.stamp_ns.iter().zip(&actions.values) {
        write!(w, "{t}")?;
        for v in row {
            write!(w, ",{v:?}")?;
        }
        writeln!(w)?;
    }
    Ok(())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A NumPy `.npz` (stored, not deflated, fixed timestamps): `stamp_ns` int64 `[T]`,
/// `actions` float64 `[T, A]`, `joint_names` unicode `[A]`.
pub fn write_npz<W: Write + std::io::Seek>(w: &mut W, actions: &Actions) -> std::io::Result<()> {
    use zip::write::SimpleFileOptions;
    let opts = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o644);
    let mut zip = zip::ZipWriter::new(w);
    let t = actions.stamp_ns.len();
    let a = actions.joint_names.len();

    let mut buf = npy_header("<i8", &[t]);
    for s in &actions.stamp_ns {
        buf.extend_from_slice(&s.to_le_bytes());
    }
    zip.start_file("stamp_ns.npy", opts)
        .map_err(std::io::Error::other)?;
    zip.write_all(&buf)?;

    let mut buf = npy_header("<f8", &[t, a]);
    for row in &actions.values {
        for v in row {
            buf.extend_from_slice(&v.to_le_bytes());
        }
    }
    zip.start_file("actions.npy", opts)
        .map_err(std::io::Error::other)?;
    zip.write_all(&buf)?;

    let width = actions
        .joint_names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(1)
        .max(1);
    let mut buf = npy_header(&format!("<U{width}"), &[a]);
    for n in &actions.joint_names {
        let mut chars: Vec<char> = n.chars().collect();
        chars.resize(width, '\0');
        for c in chars {
            buf.extend_from_slice(&(c as u32).to_le_bytes());
        }
    }
    zip.start_file("joint_names.npy", opts)
        .map_err(std::io::Error::other)?;
    zip.write_all(&buf)?;
    zip.finish().map_err(std::io::Error::other)?;
    Ok(())
}

/// A version 1.0 `.npy` header for a C-order array.
fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let shape = match shape {
        [n] => format!("({n},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // magic (6) + version (2) + header length (2) + dict + '\n' is a multiple of 64.
    let total = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat((64 - total % 64) % 64));
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Actions {
        Actions {
            joint_names: vec!["j1".into(), "j,2".into()],
            stamp_ns: vec![10, 20],
            values: vec![vec![0.1, -2.5], vec![1e-9, 3.0]],
        }
    }

    #[test]
    fn csv_is_exact() {
        let mut out = Vec::new();
        write_csv(&mut out, &sample()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "stamp_ns,j1,\"j,2\"\n10,0.1,-2.5\n20,1e-9,3.0\n"
        );
    }

    #[test]
    fn npy_headers_are_aligned() {
        for shape in [vec![0], vec![7], vec![3, 6], vec![100000, 14]] {
            let h = npy_header("<f8", &shape);
            assert_eq!(h.len() % 64, 0);
            assert_eq!(*h.last().unwrap(), b'\n');
        }
    }

    #[test]
    fn npz_is_deterministic_and_a_zip() {
        let mut a = std::io::Cursor::new(Vec::new());
        let mut b = std::io::Cursor::new(Vec::new());
        write_npz(&mut a, &sample()).unwrap();
        write_npz(&mut b, &sample()).unwrap();
        assert_eq!(a.get_ref(), b.get_ref());
        let zip = zip::ZipArchive::new(std::io::Cursor::new(a.into_inner())).unwrap();
        let names: Vec<_> = zip.file_names().collect();
        assert_eq!(names.len(), 3);
    }

    #[test]
    fn atomic_write_leaves_nothing_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.csv");
        let err = write_atomically(&target, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("boom"))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        write_atomically(&target, |w| w.write_all(b"ok")).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"ok");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn format_from_extension() {
        assert_eq!(
            OutputFormat::from_path(Path::new("a.CSV")).unwrap(),
            OutputFormat::Csv
        );
        assert_eq!(
            OutputFormat::from_path(Path::new("a.npz")).unwrap(),
            OutputFormat::Npz
        );
        assert!(OutputFormat::from_path(Path::new("a.txt")).is_err());
    }
}
