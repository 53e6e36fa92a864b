//! `chunk_check`: what a chunk that breaks the limits gets. `clamp` (the default): each
//! command is rate-limited and clamped as it goes out. `reject`: a chunk any row of which is
//! outside `joint_lower_limits` / `joint_upper_limits`, or moves more than `max_joint_delta`
//! between consecutive rows or from the current command to its first row, is refused whole
//! at the tick it would be switched in: no command from it, the plan dropped (the next tick
//! asks for a fresh chunk), counted (`rejected_chunks`) and named on `/diagnostics`.

/// The `chunk_check` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChunkCheck {
    #[default]
    Clamp,
    Reject,
}

impl ChunkCheck {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "clamp" => Some(Self::Clamp),
            "reject" => Some(Self::Reject),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clamp => "clamp",
            Self::Reject => "reject",
        }
    }
}

/// The limits a chunk is checked against (empty: none of that kind).
pub struct Limits<'a> {
    pub lower: &'a [f64],
    pub upper: &'a [f64],
    /// One per action value.
    pub max_delta: &'a [f64],
}

/// The first way `rows` (commands, in the policy's units) break `limits`, starting from
/// `reference` (the current command; `None`: no step check for row 0), in words naming the
/// row and the joint (`name(i)`). `None`: the chunk is within the limits.
pub fn first_violation(
    rows: &[Vec<f64>],
    reference: Option<&[f64]>,
    limits: &Limits<'_>,
    name: impl Fn(usize) -> String,
) -> Option<String> {
    let mut previous = reference;
    for (k, row) in rows.iter().enumerate() {
        for (i, v) in row.iter().enumerate() {
            if !v.is_finite() {
                return Some(format!("row {k}: {} is not finite", name(i)));
            }
            if let (Some(lo), Some(hi)) = (limits.lower.get(i), limits.upper.get(i)) {
                if v < lo || v > hi {
                    return Some(format!(
                        "row {k}: {} = {v:.6} is outside its limits [{lo}, {hi}]",
                        name(i)
                    ));
                }
            }
            if let (Some(d), Some(p)) = (limits.max_delta.get(i), previous.and_then(|p| p.get(i))) {
                let step = (v - p).abs();
                if p.is_finite() && step > *d {
                    let from = if k == 0 {
                        "the current command".to_string()
                    } else {
                        format!("row {}", k - 1)
                    };
                    return Some(format!(
                        "row {k}: {} moves {step:.6} from {from} (max_joint_delta {d})",
                        name(i)
                    ));
                }
            }
        }
        previous = Some(row);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(i: usize) -> String {
        format!("`j{i}`")
    }

    #[test]
    fn each_rule_names_the_row_and_the_joint() {
        let none = Limits {
            lower: &[],
            upper: &[],
            max_delta: &[],
        };
        let rows = vec![vec![0.0, 1.0], vec![0.1, 1.2], vec![0.2, 1.4]];
        assert_eq!(first_violation(&rows, None, &none, name), None);
        let bounds = Limits {
            lower: &[-1.0, 0.0],
            upper: &[1.0, 1.3],
            max_delta: &[],
        };
        assert_eq!(
            first_violation(&rows, None, &bounds, name).unwrap(),
            "row 2: `j1` = 1.400000 is outside its limits [0, 1.3]"
        );
        let steps = Limits {
            lower: &[],
            upper: &[],
            max_delta: &[0.5, 0.15],
        };
        assert_eq!(
            first_violation(&rows, None, &steps, name).unwrap(),
            "row 1: `j1` moves 0.200000 from row 0 (max_joint_delta 0.15)"
        );
        let wide = Limits {
            lower: &[],
            upper: &[],
            max_delta: &[0.5, 0.5],
        };
        assert_eq!(first_violation(&rows, None, &wide, name), None);
        assert_eq!(
            first_violation(&rows, Some(&[0.0, 0.2]), &wide, name).unwrap(),
            "row 0: `j1` moves 0.800000 from the current command (max_joint_delta 0.5)"
        );
        // A reference value that is not known (NaN: no state for that joint) is no step.
        assert_eq!(
            first_violation(&rows, Some(&[0.0, f64::NAN]), &wide, name),
            None
        );
        let nan = vec![vec![0.0, f64::NAN]];
        assert!(first_violation(&nan, None, &none, name)
            .unwrap()
            .contains("not finite"));
        assert_eq!(ChunkCheck::parse(" Reject "), Some(ChunkCheck::Reject));
        assert_eq!(ChunkCheck::parse("drop"), None);
    }
}
