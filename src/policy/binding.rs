//! Input aliasing: which observation tensor feeds which model input, and which model output
//! holds the action chunk.
//!
//! Names match after canonicalisation: an `observation.` prefix is dropped and `image` /
//! `image.<cam>` become `images` / `images.<cam>`; so `state`, `observation.state`,
//! `images.top` and `observation.images.top` all bind as getiaction / LeRobot name them.
//! Where a runtime renamed the model's ports (e.g. `input.1`), the metadata's `input_shapes`
//! order gives a positional fallback; a last fallback binds a port to the one observation
//! tensor whose shape fits it alone.

use ndarray::{Array2, ArrayD, Axis};

use super::{Observation, PolicyError};
use crate::runtime::{fmt_shape, TensorMap, TensorSpec};

/// Output names that hold the action chunk, in order of preference.
pub const ACTION_OUTPUT_NAMES: &[&str] = &["action", "actions", "output", "pred_actions"];

/// The canonical form of a tensor name (see the module docs).
pub fn canonical_name(name: &str) -> String {
    let n = name.strip_prefix("observation.").unwrap_or(name);
    if n == "image" {
        "images".to_string()
    } else if let Some(cam) = n.strip_prefix("image.") {
        format!("images.{cam}")
    } else {
        n.to_string()
    }
}

fn is_image(canonical: &str) -> bool {
    canonical == "images" || canonical.starts_with("images.")
}

/// The resolved binding: for each model input (model order), the observation key feeding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputBinding {
    pub pairs: Vec<(String, String)>,
}

impl InputBinding {
    /// Resolves the binding of `specs` (model inputs) to the tensors of `obs`.
    /// `metadata_order` is the metadata's `input_shapes` key order (positional fallback).
    pub fn resolve(
        specs: &[TensorSpec],
        metadata_order: &[String],
        obs: &Observation,
    ) -> Result<Self, PolicyError> {
        let keys: Vec<&str> = obs.names().collect();
        let find_by_name = |name: &str| -> Option<String> {
            if let Some(k) = keys.iter().find(|k| **k == name) {
                return Some((*k).to_string());
            }
            let c = canonical_name(name);
            let matches: Vec<&&str> = keys.iter().filter(|k| canonical_name(k) == c).collect();
            if matches.len() == 1 {
                return Some(matches[0].to_string());
            }
            None
        };
        let positional = metadata_order.len() == specs.len();
        let model_images = specs
            .iter()
            .enumerate()
            .filter(|(i, s)| {
                is_image(&canonical_name(&s.name))
                    || (positional && is_image(&canonical_name(&metadata_order[*i])))
            })
            .count();
        let obs_images: Vec<&&str> = keys
            .iter()
            .filter(|k| is_image(&canonical_name(k)))
            .collect();

        let mut pairs = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let mut found = find_by_name(&spec.name);
            if found.is_none() && positional {
                found = find_by_name(&metadata_order[i]);
            }
            let canonical = canonical_name(&spec.name);
            let logical = if positional {
                canonical_name(&metadata_order[i])
            } else {
                canonical.clone()
            };
            if found.is_none()
                && (is_image(&canonical) || is_image(&logical))
                && model_images == 1
                && obs_images.len() == 1
            {
                // One camera in the model, one in the observation: `images` <-> `images.top`.
                found = Some(obs_images[0].to_string());
            }
            if found.is_none() && specs.iter().filter(|s| s.shape == spec.shape).count() == 1 {
                // Last resort: the only observation tensor whose shape fits this port, and the
                // only port of that shape (so two cameras are never cross-wired).
                let fits: Vec<&&str> = keys
                    .iter()
                    .filter(|k| obs.get(k).is_some_and(|t| fit_input(spec, k, t).is_ok()))
                    .collect();
                if fits.len() == 1 {
                    log::warn!(
                        "model input `{}` bound to observation `{}` by shape alone",
                        spec.name,
                        fits[0]
                    );
                    found = Some(fits[0].to_string());
                }
            }
            match found {
                Some(k) => pairs.push((spec.name.clone(), k)),
                None => {
                    let mut accepted = vec![spec.name.clone(), format!("observation.{canonical}")];
                    if positional && metadata_order[i] != spec.name {
                        accepted.push(metadata_order[i].clone());
                    }
                    return Err(PolicyError::MissingObservation {
                        input: spec.name.clone(),
                        available: if keys.is_empty() {
                            "nothing".into()
                        } else {
                            keys.join(", ")
                        },
                        accepted: accepted.join(", "),
                    });
                }
            }
        }
        Ok(Self { pairs })
    }

    /// Whether this binding still applies to `obs` (same keys present).
    pub fn applies_to(&self, obs: &Observation) -> bool {
        self.pairs.iter().all(|(_, k)| obs.get(k).is_some())
    }
}

/// Shapes an observation tensor for a model port: adds the batch dimension when missing and
/// checks the shape. Returns a view (no copy).
pub(crate) fn fit_input<'a>(
    spec: &TensorSpec,
    key: &str,
    tensor: &'a ArrayD<f32>,
) -> Result<ndarray::ArrayViewD<'a, f32>, PolicyError> {
    let view = tensor.view();
    if spec.accepts(view.shape()) {
        return Ok(view);
    }
    if view.ndim() + 1 == spec.shape.len() {
        let batched = view.clone().insert_axis(Axis(0));
        if spec.accepts(batched.shape()) {
            return Ok(batched);
        }
    }
    Err(PolicyError::Shape {
        tensor: key.to_string(),
        input: spec.name.clone(),
        expected: fmt_shape(&spec.shape),
        actual: tensor.shape().to_vec(),
    })
}

/// The name of the output holding the action chunk.
pub(crate) fn action_output(outputs: &[TensorSpec]) -> Result<String, PolicyError> {
    for want in ACTION_OUTPUT_NAMES {
        if let Some(o) = outputs.iter().find(|o| o.name == *want) {
            return Ok(o.name.clone());
        }
    }
    if outputs.len() == 1 {
        return Ok(outputs[0].name.clone());
    }
    Err(PolicyError::NoActionOutput {
        outputs: outputs
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        looked_for: ACTION_OUTPUT_NAMES.join(", "),
    })
}

/// Takes the action output out of `outputs` as `[chunk, A]`, rejecting non-finite values.
pub(crate) fn extract_chunk(
    mut outputs: TensorMap,
    name: &str,
) -> Result<Array2<f32>, PolicyError> {
    let out = outputs
        .remove(name)
        .ok_or_else(|| PolicyError::NoActionOutput {
            outputs: outputs.keys().cloned().collect::<Vec<_>>().join(", "),
            looked_for: name.to_string(),
        })?;
    let shape = out.shape().to_vec();
    let (chunk, dim) = match shape.as_slice() {
        [1, c, a] => (*c, *a),
        [c, a] => (*c, *a),
        [a] => (1, *a),
        _ => {
            return Err(PolicyError::ActionShape {
                output: name.to_string(),
                actual: shape,
            })
        }
    };
    if chunk == 0 || dim == 0 {
        return Err(PolicyError::ActionShape {
            output: name.to_string(),
            actual: shape,
        });
    }
    let arr = out
        .into_shape_with_order((chunk, dim))
        .map_err(|_| PolicyError::ActionShape {
            output: name.to_string(),
            actual: shape.clone(),
        })?;
    if let Some(idx) = arr.iter().position(|v| !v.is_finite()) {
        return Err(PolicyError::NonFiniteAction {
            output: name.to_string(),
            step: idx / dim,
            joint: idx % dim,
        });
    }
    Ok(arr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::DType;

    fn spec(name: &str, shape: &[usize]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            shape: shape.iter().map(|d| Some(*d)).collect(),
            dtype: DType::F32,
        }
    }

    fn obs(keys: &[(&str, &[usize])]) -> Observation {
        keys.iter()
            .map(|(k, s)| (k.to_string(), ArrayD::zeros(s.to_vec())))
            .collect()
    }

    #[test]
    fn canonical_names() {
        assert_eq!(canonical_name("observation.state"), "state");
        assert_eq!(canonical_name("observation.image"), "images");
        assert_eq!(canonical_name("observation.images.top"), "images.top");
        assert_eq!(canonical_name("image.wrist"), "images.wrist");
        assert_eq!(canonical_name("images"), "images");
    }

    #[test]
    fn aliases_bind() {
        let specs = [spec("state", &[1, 6]), spec("images", &[1, 3, 8, 8])];
        let o = obs(&[
            ("observation.state", &[6]),
            ("observation.images.top", &[3, 8, 8]),
        ]);
        let b = InputBinding::resolve(&specs, &[], &o).unwrap();
        assert_eq!(b.pairs[0].1, "observation.state");
        assert_eq!(b.pairs[1].1, "observation.images.top");
    }

    #[test]
    fn multi_camera_needs_names() {
        let specs = [
            spec("images.top", &[1, 3, 8, 8]),
            spec("images.wrist", &[1, 3, 8, 8]),
        ];
        let o = obs(&[
            ("observation.images.wrist", &[3, 8, 8]),
            ("images.top", &[3, 8, 8]),
        ]);
        let b = InputBinding::resolve(&specs, &[], &o).unwrap();
        assert_eq!(b.pairs[0].1, "images.top");
        assert_eq!(b.pairs[1].1, "observation.images.wrist");
        let o = obs(&[("images.top", &[3, 8, 8]), ("images.side", &[3, 8, 8])]);
        let e = InputBinding::resolve(&specs, &[], &o)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`images.wrist`"), "{e}");
    }

    #[test]
    fn positional_fallback_for_renamed_ports() {
        let specs = [
            spec("input.1", &[1, 6]),
            spec("onnx::Conv_2", &[1, 3, 8, 8]),
        ];
        let order = vec!["state".to_string(), "images".to_string()];
        let o = obs(&[("state", &[6]), ("images", &[3, 8, 8])]);
        let b = InputBinding::resolve(&specs, &order, &o).unwrap();
        assert_eq!(
            b.pairs,
            vec![
                ("input.1".into(), "state".into()),
                ("onnx::Conv_2".into(), "images".into())
            ]
        );
    }

    #[test]
    fn shape_fallback_and_missing() {
        let specs = [spec("x", &[1, 6])];
        let b = InputBinding::resolve(&specs, &[], &obs(&[("joint_pos", &[6])])).unwrap();
        assert_eq!(b.pairs[0].1, "joint_pos");
        let e = InputBinding::resolve(&specs, &[], &obs(&[("a", &[5])])).unwrap_err();
        assert!(matches!(e, PolicyError::MissingObservation { .. }), "{e}");
    }

    #[test]
    fn fit_adds_batch_and_rejects_bad_shapes() {
        let s = spec("state", &[1, 6]);
        let t = ArrayD::zeros(vec![6]);
        assert_eq!(fit_input(&s, "state", &t).unwrap().shape(), &[1, 6]);
        let t = ArrayD::zeros(vec![7]);
        let e = fit_input(&s, "observation.state", &t)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("observation.state") && e.contains("[1, 6]") && e.contains("[7]"),
            "{e}"
        );
    }

    #[test]
    fn chunk_extraction() {
        let mut m = TensorMap::new();
        m.insert(
            "action".into(),
            ArrayD::from_shape_vec(vec![1, 2, 3], (0..6).map(|v| v as f32).collect()).unwrap(),
        );
        let c = extract_chunk(m, "action").unwrap();
        assert_eq!(c.shape(), &[2, 3]);
        assert_eq!(c[[1, 0]], 3.0);
        let mut m = TensorMap::new();
        m.insert("action".into(), ArrayD::from_elem(vec![1, 2, 2], f32::NAN));
        assert!(matches!(
            extract_chunk(m, "action"),
            Err(PolicyError::NonFiniteAction {
                step: 0,
                joint: 0,
                ..
            })
        ));
        let mut m = TensorMap::new();
        m.insert("action".into(), ArrayD::zeros(vec![2, 2, 2]));
        assert!(matches!(
            extract_chunk(m, "action"),
            Err(PolicyError::ActionShape { .. })
        ));
    }

    #[test]
    fn action_output_choice() {
        assert_eq!(
            action_output(&[spec("aux", &[1]), spec("actions", &[1, 2, 3])]).unwrap(),
            "actions"
        );
        assert_eq!(action_output(&[spec("y", &[1])]).unwrap(), "y");
        assert!(action_output(&[spec("a", &[1]), spec("b", &[1])]).is_err());
    }
}
