//! `normalize` / `denormalize`: dataset statistics applied outside the graph.
//!
//! Formulas (eps = 1e-8), as physicalai's `StatsNormalizer` / `StatsDenormalizer`:
//!
//! | mode | forward | inverse |
//! |---|---|---|
//! | `mean_std` | `(x - mean) / (std + eps)` | `x * std + mean` (no eps) |
//! | `min_max` | `2 (x - min) / (max - min + eps) - 1` | `(x + 1) / 2 * (max - min) + min` |
//! | `quantiles` | `2 (x - q01) / d - 1`, `d = q99 - q01`, `eps` where `d == 0` | `(x + 1) d / 2 + q01` |
//! | `identity` | `x` | `x` |
//!
//! An optional `mask` statistic keeps the dimensions where it is false (zero) unchanged.
//! Each transform is precomputed at load as `y = a x + b` per element (in `f64`, then
//! applied to the `f32` tensor with the statistics broadcast as numpy broadcasts them), and
//! unmasked elements get `a = 1, b = 0`, which is exact.
//!
//! Statistics come from a safetensors file (`"{feature}/{stat}"` keys) or inline `stats`
//! (`{feature: {stat: list}}`; non-numeric entries such as `type` / `name` are ignored).
//! Non-finite statistics, a listed feature without statistics, and a missing statistic for
//! the mode are errors at load that name the feature, the statistic and the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn, Zip};
use serde_json::Value;

use crate::export::manifest::Component;
use crate::policy::binding::canonical_name;
use crate::policy::PolicyError;

const EPS: f64 = 1e-8;

/// Normalization mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormMode {
    MeanStd,
    MinMax,
    Quantiles,
    Identity,
}

impl NormMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mean_std" => Some(Self::MeanStd),
            "min_max" => Some(Self::MinMax),
            "quantiles" => Some(Self::Quantiles),
            "identity" => Some(Self::Identity),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MeanStd => "mean_std",
            Self::MinMax => "min_max",
            Self::Quantiles => "quantiles",
            Self::Identity => "identity",
        }
    }
    /// The statistics the mode needs.
    pub fn stats(self) -> &'static [&'static str] {
        match self {
            Self::MeanStd => &["mean", "std"],
            Self::MinMax => &["min", "max"],
            Self::Quantiles => &["q01", "q99"],
            Self::Identity => &[],
        }
    }
}

/// Statistics of one feature: stat name -> values (any shape, broadcast against the data).
pub type FeatureStats = BTreeMap<String, ArrayD<f64>>;

/// Where the statistics came from, for messages.
#[derive(Debug, Clone)]
pub enum StatsSource {
    File(PathBuf),
    Inline {
        manifest: PathBuf,
        json_path: String,
    },
}

impl std::fmt::Display for StatsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatsSource::File(p) => write!(f, "{}", p.display()),
            StatsSource::Inline {
                manifest,
                json_path,
            } => write!(f, "{} (`{json_path}`)", manifest.display()),
        }
    }
}

/// One feature's transform `y = a x + b`, precomputed.
#[derive(Debug, Clone)]
struct Affine {
    feature: String,
    a: ArrayD<f64>,
    b: ArrayD<f64>,
}

impl Affine {
    /// The two layouts every package has, on contiguous data, without the general
    /// broadcasting iterator: statistics over the trailing axes (a state `[S]` against
    /// `[1, S]`, an action `[A]` against `[1, T, A]`), and per-channel image statistics
    /// (`[C, 1, 1]` against `[.., C, H, W]`). Returns false when neither applies.
    fn apply_fast(&self, t: &mut ArrayD<f32>) -> bool {
        let (Some(a), Some(b)) = (self.a.as_slice(), self.b.as_slice()) else {
            return false;
        };
        let s = t.shape().to_vec();
        let sa = self.a.shape();
        let Some(data) = t.as_slice_mut() else {
            return false;
        };
        if sa.len() <= s.len() && sa == &s[s.len() - sa.len()..] && !a.is_empty() {
            for row in data.chunks_exact_mut(a.len()) {
                for ((x, a), b) in row.iter_mut().zip(a).zip(b) {
                    *x = (f64::from(*x) * a + b) as f32;
                }
            }
            return true;
        }
        // [C, 1, ..., 1] against [..., C, d1, ..., dk]: one (a, b) per channel block.
        let lead = sa.iter().take_while(|d| **d != 1 || sa.len() == 1).count();
        if lead == 1 && sa.len() <= s.len() && sa[0] == s[s.len() - sa.len()] {
            let inner: usize = s[s.len() - sa.len() + 1..].iter().product();
            if inner == 0 {
                return true;
            }
            for (k, block) in data.chunks_exact_mut(inner).enumerate() {
                let (a, b) = (a[k % a.len()], b[k % b.len()]);
                for x in block {
                    *x = (f64::from(*x) * a + b) as f32;
                }
            }
            return true;
        }
        false
    }
}

/// A feature listed implicitly (empty `features`) whose statistics do not fit the mode: an
/// error only if an input with that name arrives, as physicalai would fail then too.
#[derive(Debug, Clone)]
struct Unusable {
    feature: String,
    problem: String,
}

/// `normalize` (forward) or `denormalize` (inverse) over selected features.
#[derive(Debug, Clone)]
pub struct StatsTransform {
    inverse: bool,
    mode: NormMode,
    source: StatsSource,
    affine: Vec<Affine>,
    unusable: Vec<Unusable>,
    /// Only the action output may be matched by alias on the output side.
    json_path: String,
}

impl StatsTransform {
    /// From a `normalize` / `denormalize` component; `dir` is the export directory.
    pub fn from_component(
        c: &Component,
        dir: &Path,
        manifest: &Path,
        inverse: bool,
    ) -> Result<Self, PolicyError> {
        let err = |key: String, problem: String| PolicyError::Package {
            file: manifest.to_path_buf(),
            key,
            problem,
        };
        let mode = match c.param("mode") {
            None => NormMode::MeanStd,
            Some(Value::String(s)) => NormMode::parse(s).ok_or_else(|| {
                err(
                    c.param_path("mode"),
                    format!("is `{s}`; expected mean_std, min_max, quantiles or identity"),
                )
            })?,
            Some(other) => {
                return Err(err(
                    c.param_path("mode"),
                    format!("must be a string, got {other}"),
                ))
            }
        };
        let features: Vec<String> = match c.param("features") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str().map(str::to_string).ok_or_else(|| {
                        err(
                            format!("{}[{i}]", c.param_path("features")),
                            format!("must be a feature name, got {v}"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(err(
                    c.param_path("features"),
                    format!("must be a list of feature names, got {other}"),
                ))
            }
        };
        let path_key = ["stats_path", "artifact"]
            .into_iter()
            .find(|k| c.param(k).is_some());
        let (stats, source) = match (c.param("stats"), path_key) {
            (Some(inline), _) => {
                let at = c.param_path("stats");
                let source = StatsSource::Inline {
                    manifest: manifest.to_path_buf(),
                    json_path: at.clone(),
                };
                (parse_inline(inline, &at, manifest)?, source)
            }
            (None, Some(key)) => {
                let rel = c.param(key).and_then(Value::as_str).ok_or_else(|| {
                    err(c.param_path(key), "must be a file name".into())
                })?;
                let path = crate::export::resolve_in_dir(dir, rel, manifest, &c.param_path(key))?;
                (read_safetensors(&path)?, StatsSource::File(path))
            }
            (None, None) => {
                return Err(err(
                    c.json_path.clone(),
                    "gives no statistics: set `stats_path` / `artifact` (a safetensors file) or inline `stats`"
                        .into(),
                ))
            }
        };
        Self::assemble(
            mode,
            inverse,
            &stats,
            features,
            source,
            c.json_path.clone(),
            &c.param_path("features"),
        )
    }

    /// From statistics already in memory: `features` selects (empty: every feature of
    /// `stats`). For tools and benchmarks; packages go through
    /// [`from_component`](Self::from_component).
    pub fn from_stats(
        mode: NormMode,
        inverse: bool,
        stats: &BTreeMap<String, FeatureStats>,
        features: &[&str],
        source: StatsSource,
    ) -> Result<Self, PolicyError> {
        let features = features.iter().map(|f| f.to_string()).collect();
        Self::assemble(
            mode,
            inverse,
            stats,
            features,
            source,
            String::new(),
            "features",
        )
    }

    fn assemble(
        mode: NormMode,
        inverse: bool,
        stats: &BTreeMap<String, FeatureStats>,
        features: Vec<String>,
        source: StatsSource,
        json_path: String,
        features_key: &str,
    ) -> Result<Self, PolicyError> {
        let mut out = StatsTransform {
            inverse,
            mode,
            source,
            affine: Vec::new(),
            unusable: Vec::new(),
            json_path,
        };
        if mode == NormMode::Identity {
            return Ok(out);
        }
        let explicit = !features.is_empty();
        let names: Vec<String> = if explicit {
            features
        } else {
            stats.keys().cloned().collect()
        };
        for name in names {
            let Some(fs) = stats.get(&name) else {
                return Err(PolicyError::Stats {
                    source_desc: out.source.to_string(),
                    feature: name.clone(),
                    stat: "(any)".into(),
                    problem: format!(
                        "`{name}` is listed in `{features_key}` but has no statistics (features with statistics: {})",
                        join(stats.keys())
                    ),
                });
            };
            match affine_for(&name, fs, mode, inverse, &out.source) {
                Ok(a) => out.affine.push(a),
                Err(e) if !explicit => {
                    log::debug!("{}: {e}", out.json_path);
                    out.unusable.push(Unusable {
                        feature: name,
                        problem: e.to_string(),
                    })
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    pub fn mode(&self) -> NormMode {
        self.mode
    }
    pub fn is_inverse(&self) -> bool {
        self.inverse
    }
    /// The features it transforms.
    pub fn features(&self) -> Vec<&str> {
        self.affine.iter().map(|a| a.feature.as_str()).collect()
    }
    pub fn source(&self) -> &StatsSource {
        &self.source
    }

    /// Applies the transform to the tensors whose name matches a feature (exactly, or by
    /// the alias rules; on the output side `action` also matches the model's action output
    /// `action_key`). Features absent from `tensors` are skipped.
    pub fn apply(
        &self,
        tensors: &mut BTreeMap<String, ArrayD<f32>>,
        action_key: Option<&str>,
    ) -> Result<(), PolicyError> {
        for u in &self.unusable {
            if find_key(tensors, &u.feature, action_key).is_some() {
                return Err(PolicyError::Preprocess(format!(
                    "{}: {}",
                    self.json_path, u.problem
                )));
            }
        }
        for f in &self.affine {
            let Some(key) = find_key(tensors, &f.feature, action_key) else {
                continue;
            };
            let t = tensors.get_mut(&key).expect("key found above");
            if f.apply_fast(t) {
                continue;
            }
            let shape = t.shape().to_vec();
            let (Some(a), Some(b)) = (f.a.broadcast(IxDyn(&shape)), f.b.broadcast(IxDyn(&shape)))
            else {
                return Err(PolicyError::Shape {
                    tensor: key,
                    input: format!("statistics of `{}` ({})", f.feature, self.source),
                    expected: format!("a shape the statistics {:?} broadcast to", f.a.shape()),
                    actual: shape,
                });
            };
            Zip::from(t)
                .and(&a)
                .and(&b)
                .for_each(|x, a, b| *x = (f64::from(*x) * a + b) as f32);
        }
        Ok(())
    }
}

fn join<'a>(it: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = it.map(String::as_str).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// The tensor a feature applies to: exact name, then alias (canonical name), then the
/// action output for the feature `action`.
fn find_key(
    tensors: &BTreeMap<String, ArrayD<f32>>,
    feature: &str,
    action_key: Option<&str>,
) -> Option<String> {
    if tensors.contains_key(feature) {
        return Some(feature.to_string());
    }
    let c = canonical_name(feature);
    let mut hits = tensors.keys().filter(|k| canonical_name(k) == c);
    if let (Some(k), None) = (hits.next(), hits.next()) {
        return Some(k.clone());
    }
    if matches!(c.as_str(), "action" | "actions") {
        if let Some(k) = action_key.filter(|k| tensors.contains_key(*k)) {
            return Some(k.to_string());
        }
    }
    None
}

fn affine_for(
    feature: &str,
    fs: &FeatureStats,
    mode: NormMode,
    inverse: bool,
    source: &StatsSource,
) -> Result<Affine, PolicyError> {
    let get = |stat: &str| -> Result<&ArrayD<f64>, PolicyError> {
        let s = fs.get(stat).ok_or_else(|| PolicyError::Stats {
            source_desc: source.to_string(),
            feature: feature.to_string(),
            stat: stat.to_string(),
            problem: format!(
                "mode {} needs `{feature}/{stat}`, which is missing (it has: {})",
                mode.as_str(),
                join(fs.keys())
            ),
        })?;
        if let Some(i) = s.iter().position(|v| !v.is_finite()) {
            return Err(PolicyError::Stats {
                source_desc: source.to_string(),
                feature: feature.to_string(),
                stat: stat.to_string(),
                problem: format!(
                    "`{feature}/{stat}` holds a non-finite value ({}) at flat index {i}",
                    s.iter().nth(i).copied().unwrap_or(f64::NAN)
                ),
            });
        }
        Ok(s)
    };
    let [lo, hi] = match mode.stats() {
        [lo, hi] => [get(lo)?, get(hi)?],
        _ => unreachable!("identity is handled by the caller"),
    };
    let shape_err = |what: &str| PolicyError::Stats {
        source_desc: source.to_string(),
        feature: feature.to_string(),
        stat: what.to_string(),
        problem: format!(
            "statistics of `{feature}` have shapes {:?} and {:?}, which do not broadcast",
            lo.shape(),
            hi.shape()
        ),
    };
    // The larger of the two shapes; the other must broadcast to it.
    let target: Vec<usize> = if lo.len() >= hi.len() {
        lo.shape().to_vec()
    } else {
        hi.shape().to_vec()
    };
    let lo = lo
        .broadcast(IxDyn(&target))
        .ok_or_else(|| shape_err(mode.stats()[0]))?;
    let hi = hi
        .broadcast(IxDyn(&target))
        .ok_or_else(|| shape_err(mode.stats()[1]))?;
    let mut a = ArrayD::<f64>::zeros(IxDyn(&target));
    let mut b = ArrayD::<f64>::zeros(IxDyn(&target));
    Zip::from(&mut a)
        .and(&mut b)
        .and(&lo)
        .and(&hi)
        .for_each(|a, b, &lo, &hi| {
            let (sa, sb) = match (mode, inverse) {
                // (x - mean) / (std + eps)
                (NormMode::MeanStd, false) => {
                    let s = 1.0 / (hi + EPS);
                    (s, -lo * s)
                }
                // x * std + mean
                (NormMode::MeanStd, true) => (hi, lo),
                // 2 (x - min) / (max - min + eps) - 1
                (NormMode::MinMax, false) => {
                    let s = 2.0 / (hi - lo + EPS);
                    (s, -lo * s - 1.0)
                }
                // (x + 1) / 2 (max - min) + min
                (NormMode::MinMax, true) => {
                    let s = (hi - lo) / 2.0;
                    (s, s + lo)
                }
                // 2 (x - q01) / d - 1
                (NormMode::Quantiles, false) => {
                    let d = if hi - lo == 0.0 { EPS } else { hi - lo };
                    let s = 2.0 / d;
                    (s, -lo * s - 1.0)
                }
                // (x + 1) d / 2 + q01
                (NormMode::Quantiles, true) => {
                    let d = if hi - lo == 0.0 { EPS } else { hi - lo };
                    let s = d / 2.0;
                    (s, s + lo)
                }
                (NormMode::Identity, _) => (1.0, 0.0),
            };
            *a = sa;
            *b = sb;
        });
    if let Some(mask) = fs.get("mask") {
        let m = mask
            .broadcast(IxDyn(&target))
            .ok_or_else(|| PolicyError::Stats {
                source_desc: source.to_string(),
                feature: feature.to_string(),
                stat: "mask".into(),
                problem: format!(
                    "`{feature}/mask` has shape {:?}, which does not broadcast to {target:?}",
                    mask.shape()
                ),
            })?;
        Zip::from(&mut a).and(&mut b).and(&m).for_each(|a, b, &m| {
            if m == 0.0 {
                *a = 1.0;
                *b = 0.0;
            }
        });
    }
    Ok(Affine {
        feature: feature.to_string(),
        a,
        b,
    })
}

/// Reads `"{feature}/{stat}"` tensors of a safetensors file (keys without `/` are ignored).
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, FeatureStats>, PolicyError> {
    let bytes = std::fs::read(path).map_err(|e| PolicyError::Stats {
        source_desc: path.display().to_string(),
        feature: "(file)".into(),
        stat: "(file)".into(),
        problem: format!("cannot read the file: {e}"),
    })?;
    parse_safetensors(&bytes, path)
}

/// Parses safetensors bytes; `path` names the file in errors.
pub fn parse_safetensors(
    bytes: &[u8],
    path: &Path,
) -> Result<BTreeMap<String, FeatureStats>, PolicyError> {
    use safetensors::{Dtype, SafeTensors};
    let st = SafeTensors::deserialize(bytes).map_err(|e| PolicyError::Stats {
        source_desc: path.display().to_string(),
        feature: "(file)".into(),
        stat: "(file)".into(),
        problem: format!("not a valid safetensors file: {e}"),
    })?;
    let mut out: BTreeMap<String, FeatureStats> = BTreeMap::new();
    for (key, view) in st.tensors() {
        let Some((feature, stat)) = key.rsplit_once('/') else {
            continue;
        };
        let data = view.data();
        let bad = |problem: String| PolicyError::Stats {
            source_desc: path.display().to_string(),
            feature: feature.to_string(),
            stat: stat.to_string(),
            problem,
        };
        let values: Vec<f64> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| f64::from(half::f16::from_le_bytes([c[0], c[1]])))
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| f64::from(half::bf16::from_le_bytes([c[0], c[1]])))
                .collect(),
            Dtype::I64 => data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f64)
                .collect(),
            Dtype::I32 => data
                .chunks_exact(4)
                .map(|c| f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            Dtype::BOOL | Dtype::U8 => data.iter().map(|b| f64::from(*b)).collect(),
            other => {
                return Err(bad(format!(
                    "`{key}` has element type {other:?}, which is not supported"
                )))
            }
        };
        let arr = ArrayD::from_shape_vec(IxDyn(view.shape()), values)
            .map_err(|e| bad(format!("`{key}`: {e}")))?;
        out.entry(feature.to_string())
            .or_default()
            .insert(stat.to_string(), arr);
    }
    Ok(out)
}

/// Inline `stats`: `{feature: {stat: number | nested list}}`; other entries (strings such as
/// `type`, `name`) are ignored, as they are harmless to physicalai's normalizer too.
fn parse_inline(
    v: &Value,
    at: &str,
    manifest: &Path,
) -> Result<BTreeMap<String, FeatureStats>, PolicyError> {
    let err = |key: String, problem: String| PolicyError::Package {
        file: manifest.to_path_buf(),
        key,
        problem,
    };
    let Value::Object(features) = v else {
        return Err(err(
            at.into(),
            "must be an object {feature: {stat: values}}".into(),
        ));
    };
    let mut out = BTreeMap::new();
    for (feature, stats) in features {
        let Value::Object(stats) = stats else {
            return Err(err(
                format!("{at}.{feature}"),
                "must be an object {stat: values}".into(),
            ));
        };
        let mut fs = FeatureStats::new();
        for (stat, values) in stats {
            let key = format!("{at}.{feature}.{stat}");
            match values {
                Value::Number(_) | Value::Array(_) => {
                    let mut shape = Vec::new();
                    let mut flat = Vec::new();
                    nested(values, 0, &mut shape, &mut flat)
                        .map_err(|problem| err(key.clone(), problem))?;
                    fs.insert(
                        stat.clone(),
                        ArrayD::from_shape_vec(IxDyn(&shape), flat)
                            .map_err(|e| err(key, e.to_string()))?,
                    );
                }
                Value::Bool(b) if stat == "mask" => {
                    fs.insert(
                        stat.clone(),
                        ArrayD::from_elem(IxDyn(&[]), f64::from(u8::from(*b))),
                    );
                }
                _ => {} // `type`, `name`, `shape` strings and the like
            }
        }
        out.insert(feature.clone(), fs);
    }
    Ok(out)
}

/// Flattens a (rectangular) nested list of numbers or booleans.
fn nested(
    v: &Value,
    depth: usize,
    shape: &mut Vec<usize>,
    flat: &mut Vec<f64>,
) -> Result<(), String> {
    match v {
        Value::Number(n) => {
            if depth != shape.len() {
                return Err("is not a rectangular array".into());
            }
            // JSON has no NaN; an overflowing literal becomes +-inf and is caught later.
            flat.push(n.as_f64().unwrap_or(f64::NAN));
            Ok(())
        }
        Value::Bool(b) => {
            if depth != shape.len() {
                return Err("is not a rectangular array".into());
            }
            flat.push(f64::from(u8::from(*b)));
            Ok(())
        }
        Value::Array(items) => {
            if depth > 8 {
                return Err("nests deeper than 8 levels".into());
            }
            if depth == shape.len() {
                if !flat.is_empty() {
                    return Err("is not a rectangular array".into());
                }
                shape.push(items.len());
            } else if shape[depth] != items.len() {
                return Err("is not a rectangular array".into());
            }
            for item in items {
                nested(item, depth + 1, shape, flat)?;
            }
            Ok(())
        }
        other => Err(format!("must hold numbers, got {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Dimension};

    fn stats(pairs: &[(&str, ArrayD<f64>)]) -> FeatureStats {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn transform(mode: NormMode, inverse: bool, fs: FeatureStats) -> StatsTransform {
        let src = StatsSource::File("s.safetensors".into());
        StatsTransform {
            inverse,
            mode,
            affine: vec![affine_for("observation.state", &fs, mode, inverse, &src).unwrap()],
            unusable: vec![],
            source: src,
            json_path: "model.preprocessors[0]".into(),
        }
    }

    fn run(t: &StatsTransform, x: ArrayD<f32>) -> ArrayD<f32> {
        let mut m = BTreeMap::new();
        m.insert("state".to_string(), x);
        t.apply(&mut m, None).unwrap();
        m.remove("state").unwrap()
    }

    fn x() -> ArrayD<f32> {
        array![[0.5f32, -2.0, 3.0]].into_dyn()
    }

    #[test]
    fn each_mode_follows_its_formula_and_inverts() {
        let lo = array![-1.0, 0.0, 2.0].into_dyn();
        let hi = array![1.0, 4.0, 2.0].into_dyn(); // last dim: zero range
        let xs = [0.5f64, -2.0, 3.0];
        type Formula = Box<dyn Fn(usize, f64) -> f64>;
        let cases: [(NormMode, &[&str; 2], Formula); 3] = [
            (
                NormMode::MeanStd,
                &["mean", "std"],
                Box::new(|i, x| (x - [-1.0, 0.0, 2.0][i]) / ([1.0, 4.0, 2.0][i] + EPS)),
            ),
            (
                NormMode::MinMax,
                &["min", "max"],
                Box::new(|i, x| {
                    let (lo, hi) = ([-1.0, 0.0, 2.0][i], [1.0, 4.0, 2.0][i]);
                    2.0 * (x - lo) / (hi - lo + EPS) - 1.0
                }),
            ),
            (
                NormMode::Quantiles,
                &["q01", "q99"],
                Box::new(|i, x| {
                    let (lo, hi) = ([-1.0, 0.0, 2.0][i], [1.0, 4.0, 2.0][i]);
                    let d = if hi - lo == 0.0 { EPS } else { hi - lo };
                    2.0 * (x - lo) / d - 1.0
                }),
            ),
        ];
        for (mode, names, formula) in cases {
            let fs = stats(&[(names[0], lo.clone()), (names[1], hi.clone())]);
            let y = run(&transform(mode, false, fs.clone()), x());
            for i in 0..3 {
                let want = formula(i, xs[i]) as f32;
                assert!(
                    (y[[0, i]] - want).abs() <= 1e-6 * want.abs().max(1.0),
                    "{mode:?}[{i}]: {} vs {want}",
                    y[[0, i]]
                );
            }
            // Round trip on the dimensions with a non-zero range (the zero-range one maps
            // every value to the same point, by design of the formulas).
            let back = run(&transform(mode, true, fs), y);
            for i in 0..2 {
                assert!(
                    (back[[0, i]] - xs[i] as f32).abs() < 1e-5,
                    "{mode:?} round trip [{i}]"
                );
            }
        }
    }

    #[test]
    fn mean_std_inverse_has_no_eps() {
        let fs = stats(&[
            ("mean", array![1.0].into_dyn()),
            ("std", array![0.0].into_dyn()),
        ]);
        // std 0: forward is (x - 1) / 1e-8; inverse is x * 0 + 1 exactly.
        let y = run(
            &transform(NormMode::MeanStd, true, fs),
            array![[123.0f32]].into_dyn(),
        );
        assert_eq!(y[[0, 0]], 1.0);
    }

    #[test]
    fn mask_keeps_unmasked_dimensions() {
        let fs = stats(&[
            ("mean", array![1.0, 1.0, 1.0].into_dyn()),
            ("std", array![2.0, 2.0, 2.0].into_dyn()),
            ("mask", array![1.0, 0.0, 1.0].into_dyn()),
        ]);
        let y = run(&transform(NormMode::MeanStd, false, fs), x());
        assert_eq!(y[[0, 1]], -2.0, "unmasked dimension unchanged, bit for bit");
        assert!((y[[0, 0]] - (0.5 - 1.0) / 2.0).abs() < 1e-6);
    }

    #[test]
    fn non_finite_and_missing_stats_are_named() {
        let src = StatsSource::File("stats.safetensors".into());
        let fs = stats(&[
            ("mean", array![f64::NAN].into_dyn()),
            ("std", array![1.0].into_dyn()),
        ]);
        let e = affine_for("observation.state", &fs, NormMode::MeanStd, false, &src)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("observation.state")
                && e.contains("mean")
                && e.contains("stats.safetensors"),
            "{e}"
        );
        let fs = stats(&[("q01", array![0.0].into_dyn())]);
        let e = affine_for("action", &fs, NormMode::Quantiles, true, &src)
            .unwrap_err()
            .to_string();
        assert!(e.contains("action/q99"), "{e}");
    }

    #[test]
    fn image_stats_broadcast_over_channels() {
        let fs = stats(&[
            (
                "mean",
                ArrayD::from_shape_vec(vec![3, 1, 1], vec![0.1, 0.2, 0.3]).unwrap(),
            ),
            (
                "std",
                ArrayD::from_shape_vec(vec![3, 1, 1], vec![0.5, 0.5, 0.5]).unwrap(),
            ),
        ]);
        let t = transform(NormMode::MeanStd, false, fs);
        let mut m = BTreeMap::new();
        m.insert(
            "observation.images.top".to_string(),
            ArrayD::from_elem(vec![1, 3, 2, 2], 0.6f32),
        );
        // The feature is `observation.state`; rename for this check.
        let mut t2 = t.clone();
        t2.affine[0].feature = "images.top".into();
        t2.apply(&mut m, None).unwrap();
        let y = &m["observation.images.top"];
        assert!((y[[0, 2, 1, 1]] - (0.6 - 0.3) / 0.5).abs() < 1e-6);
        // A tensor the statistics do not broadcast to is an error naming it.
        let mut m = BTreeMap::new();
        m.insert(
            "images.top".to_string(),
            ArrayD::from_elem(vec![1, 4, 2, 2], 0.6f32),
        );
        let e = t2.apply(&mut m, None).unwrap_err().to_string();
        assert!(e.contains("images.top"), "{e}");
    }

    #[test]
    fn fast_paths_equal_the_broadcasting_path() {
        // Per-channel [3, 1, 1] and trailing [4] statistics, on contiguous tensors (fast
        // paths) and on the same values in a transposed, non-contiguous layout (general path).
        for (stat_shape, t_shape) in [(vec![3, 1, 1], vec![1, 3, 4, 4]), (vec![4], vec![2, 5, 4])] {
            let n: usize = stat_shape.iter().product();
            let fs = stats(&[
                (
                    "mean",
                    ArrayD::from_shape_fn(stat_shape.clone(), |i| {
                        i.slice().iter().sum::<usize>() as f64 * 0.3
                    }),
                ),
                (
                    "std",
                    ArrayD::from_shape_vec(
                        stat_shape.clone(),
                        (1..=n).map(|k| k as f64 * 0.7).collect(),
                    )
                    .unwrap(),
                ),
            ]);
            let t = transform(NormMode::MeanStd, false, fs);
            let x = ArrayD::from_shape_fn(t_shape.clone(), |i| {
                i.slice()
                    .iter()
                    .enumerate()
                    .map(|(k, v)| (*v * (k + 1)) as f32)
                    .sum::<f32>()
                    * 0.1
            });
            let fast = run(&t, x.clone());
            // Same logical values, stored transposed twice (a non-contiguous view made owned
            // keeps standard layout, so build the permuted copy and permute it back).
            let rank = t_shape.len();
            let rev: Vec<usize> = (0..rank).rev().collect();
            let stored = x
                .clone()
                .permuted_axes(IxDyn(&rev))
                .as_standard_layout()
                .to_owned();
            let mut m = BTreeMap::new();
            m.insert("state".to_string(), stored.permuted_axes(IxDyn(&rev)));
            assert!(
                m["state"].as_slice().is_none(),
                "the general path is exercised"
            );
            t.apply(&mut m, None).unwrap();
            assert_eq!(fast, m["state"], "{stat_shape:?} vs {t_shape:?}");
        }
    }

    #[test]
    fn inline_stats_ignore_strings() {
        let v: Value = serde_json::json!({"state": {"mean": [1.0, 2.0], "std": [[1.0, 1.0]], "type": "STATE", "shape": [2]}});
        let s = parse_inline(&v, "model.preprocessors[0].stats", Path::new("m.json")).unwrap();
        assert_eq!(s["state"]["mean"].shape(), &[2]);
        assert_eq!(s["state"]["std"].shape(), &[1, 2]);
        // `shape` here is numeric and kept as a statistic nobody asks for.
        let bad: Value = serde_json::json!({"state": {"mean": [[1.0], [1.0, 2.0]]}});
        let e = parse_inline(&bad, "s", Path::new("m.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.state.mean"), "{e}");
    }
}
