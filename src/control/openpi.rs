//! A policy served by an openpi server with no export on the robot: the I/O map's `openpi:`
//! section stands for the export (see [`crate::iomap::openpi`]).

use super::{ControlError, NodeParams, ParamError};
use crate::iomap::IoMap;

/// With `export_dir` empty: the I/O map's `openpi:` section describes the policy of the
/// openpi server at `remote_url` (see [`crate::iomap::openpi`]). An export and a section are
/// not combined (with an export, the observation is the export's inputs).
pub(super) fn without_export(
    params: &NodeParams,
    builder: crate::policy::InferenceModelBuilder,
) -> Result<crate::policy::InferenceModelBuilder, ControlError> {
    let invalid = |name: &str, rule: String| ParamError::Invalid {
        name: name.into(),
        rule,
    };
    if params.io_map.is_empty() {
        return Ok(builder);
    }
    let map = IoMap::load(std::path::Path::new(&params.io_map))?;
    let has_export = !params
        .export_dir
        .as_os_str()
        .to_string_lossy()
        .trim()
        .is_empty();
    match (has_export, map.openpi.is_some()) {
        (true, true) => {
            return Err(invalid(
                "io_map",
                format!(
                    "{}: an `openpi:` section describes an openpi server's observation without an export, \
                     but `export_dir` is set ({}): with an export the observation is the export's inputs; \
                     drop one",
                    params.io_map,
                    params.export_dir.display()
                ),
            )
            .into())
        }
        (true, false) => return Ok(builder),
        (false, false) => {
            return Err(invalid(
                "export_dir",
                format!(
                    "is empty and io_map `{}` has no `openpi:` section: without an export, the map must \
                     describe an openpi server's observation",
                    params.io_map
                ),
            )
            .into())
        }
        (false, true) => {}
    }
    let protocol =
        crate::runtime::RemoteProtocol::resolve(&params.remote_protocol, &params.remote_url)
            .map_err(|e| invalid("remote_protocol", e.to_string()))?;
    if protocol != crate::runtime::RemoteProtocol::Openpi || params.remote_url.trim().is_empty() {
        return Err(invalid(
            "remote_url",
            format!(
                "must be an openpi server (ws://host:port) when `export_dir` is empty and io_map `{}` \
                 has an `openpi:` section (got `{}`, protocol {})",
                params.io_map,
                params.remote_url,
                protocol
            ),
        )
        .into());
    }
    if !matches!(params.backend.as_str(), "auto" | "" | "remote") {
        return Err(invalid(
            "backend",
            format!(
                "is `{}`, but without an export the policy runs on the openpi server: use auto or remote",
                params.backend
            ),
        )
        .into());
    }
    let task = Some(params.task.as_str()).filter(|t| !t.trim().is_empty());
    Ok(builder.openpi_map(&map, task)?)
}
