//! OpenVINO tokenizer models (`tokenizer.xml` from `openvino_tokenizers`): one string in,
//! `input_ids` and `attention_mask` out, run on the CPU through the OpenVINO C API with the
//! `openvino_tokenizers` extension library, which provides the string operations.
//!
//! The extension is found at `POLICY_NODE_OPENVINO_TOKENIZERS_LIB`, else at the location
//! `tools/setup.sh` found when this crate was built, else beside the loaded OpenVINO library
//! (`<site-packages>/openvino_tokenizers/lib/libopenvino_tokenizers.so` of the wheels).

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr;

use openvino_sys as sys;

use super::openvino::{ensure_library, loaded_library};
use super::{ExportBackend, RuntimeError};

/// Environment variable naming the extension library.
pub const EXTENSION_ENV: &str = "POLICY_NODE_OPENVINO_TOKENIZERS_LIB";
const DEFAULT_EXTENSION: &str = env!("POLICY_NODE_DEFAULT_OPENVINO_TOKENIZERS_LIB");

fn last_error(what: &str, status: sys::ov_status_e) -> String {
    // SAFETY: ov_get_last_err_msg returns a thread-local, NUL-terminated string or null.
    let msg = unsafe {
        let p = sys::ov_get_last_err_msg();
        if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    format!(
        "{what} failed ({status:?}){}",
        if msg.is_empty() {
            String::new()
        } else {
            format!(": {msg}")
        }
    )
}

fn check(what: &str, status: sys::ov_status_e) -> Result<(), String> {
    if status == sys::ov_status_e::OK {
        Ok(())
    } else {
        Err(last_error(what, status))
    }
}

/// Where the `openvino_tokenizers` extension library is.
pub fn extension_library() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(EXTENSION_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if !DEFAULT_EXTENSION.is_empty() && Path::new(DEFAULT_EXTENSION).is_file() {
        return Some(PathBuf::from(DEFAULT_EXTENSION));
    }
    // <site>/openvino/libs/libopenvino_c.so.* -> <site>/openvino_tokenizers/lib/
    let lib = PathBuf::from(loaded_library()?);
    let site = lib.parent()?.parent()?.parent()?;
    let p = site.join("openvino_tokenizers/lib/libopenvino_tokenizers.so");
    p.is_file().then_some(p)
}

/// A compiled tokenizer model and its infer request.
pub struct OvTokenizer {
    core: *mut sys::ov_core_t,
    compiled: *mut sys::ov_compiled_model_t,
    request: *mut sys::ov_infer_request_t,
    path: PathBuf,
}

// SAFETY: the handles are owned by this value and used by one thread at a time (`&mut self`).
unsafe impl Send for OvTokenizer {}

impl Drop for OvTokenizer {
    fn drop(&mut self) {
        // SAFETY: each pointer is null or owned by this value; freed once, in reverse order.
        unsafe {
            if !self.request.is_null() {
                sys::ov_infer_request_free(self.request);
            }
            if !self.compiled.is_null() {
                sys::ov_compiled_model_free(self.compiled);
            }
            if !self.core.is_null() {
                sys::ov_core_free(self.core);
            }
        }
    }
}

impl OvTokenizer {
    /// Loads `tokenizer.xml` (weights in the `.bin` beside it) on the CPU.
    pub fn load(xml: &Path) -> Result<Self, RuntimeError> {
        ensure_library()?;
        let fail = |detail: String| RuntimeError::Load {
            backend: ExportBackend::OpenVino,
            path: xml.to_path_buf(),
            detail,
        };
        let ext = extension_library().ok_or_else(|| {
            fail(format!(
                "the openvino_tokenizers extension library was not found (set {EXTENSION_ENV}, \
                 or pip install openvino-tokenizers matching OpenVINO); or re-export the package \
                 with an hf_tokenizer"
            ))
        })?;
        let mut t = OvTokenizer {
            core: ptr::null_mut(),
            compiled: ptr::null_mut(),
            request: ptr::null_mut(),
            path: xml.to_path_buf(),
        };
        let c = |p: &Path| CString::new(p.display().to_string()).map_err(|e| fail(e.to_string()));
        let (ext_c, xml_c) = (c(&ext)?, c(xml)?);
        let cpu = CString::new("CPU").expect("no NUL");
        // SAFETY: plain C API calls on pointers created here; every status is checked and the
        // handles end up in `t`, which frees them.
        unsafe {
            check("ov_core_create", sys::ov_core_create(&mut t.core)).map_err(fail)?;
            check(
                &format!("adding the extension {}", ext.display()),
                sys::ov_core_add_extension(t.core, ext_c.as_ptr()),
            )
            .map_err(fail)?;
            let mut model: *mut sys::ov_model_t = ptr::null_mut();
            check(
                "reading the tokenizer model",
                sys::ov_core_read_model(t.core, xml_c.as_ptr(), ptr::null(), &mut model),
            )
            .map_err(fail)?;
            let r = check(
                "compiling the tokenizer model",
                sys::ov_core_compile_model(t.core, model, cpu.as_ptr(), 0, &mut t.compiled),
            );
            sys::ov_model_free(model);
            r.map_err(fail)?;
            check(
                "creating an infer request",
                sys::ov_compiled_model_create_infer_request(t.compiled, &mut t.request),
            )
            .map_err(fail)?;
        }
        Ok(t)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Token ids and attention mask of one text.
    pub fn tokenize(&mut self, text: &str) -> Result<(Vec<i64>, Vec<bool>), RuntimeError> {
        let fail = |detail: String| RuntimeError::Inference {
            backend: ExportBackend::OpenVino,
            detail: format!("tokenizer {}: {detail}", self.path.display()),
        };
        let text = CString::new(text).map_err(|_| fail("the task holds a NUL character".into()))?;
        // SAFETY: the string tensor copies `text`; the output tensors are read within their
        // reported element type and size, then freed.
        unsafe {
            let dims = [1i64];
            let mut shape = sys::ov_shape_t {
                rank: 0,
                dims: ptr::null_mut(),
            };
            check(
                "ov_shape_create",
                sys::ov_shape_create(1, dims.as_ptr(), &mut shape),
            )
            .map_err(fail)?;
            let mut strings = [text.as_ptr()];
            let mut input: *mut sys::ov_tensor_t = ptr::null_mut();
            let r = check(
                "creating the string tensor",
                sys::ov_tensor_create_from_string_array(strings.as_mut_ptr(), 1, shape, &mut input),
            );
            sys::ov_shape_free(&mut shape);
            r.map_err(fail)?;
            let r = check(
                "setting the input",
                sys::ov_infer_request_set_input_tensor_by_index(self.request, 0, input),
            )
            .and_then(|()| check("tokenizing", sys::ov_infer_request_infer(self.request)));
            sys::ov_tensor_free(input);
            r.map_err(fail)?;
            let ids = self.output(0).map_err(fail)?;
            let mask = self.output(1).map_err(fail)?;
            Ok((ids, mask.into_iter().map(|m| m != 0).collect()))
        }
    }

    /// Output `index` as integers (i64 or i32 tensors).
    unsafe fn output(&self, index: usize) -> Result<Vec<i64>, String> {
        let mut t: *mut sys::ov_tensor_t = ptr::null_mut();
        check(
            "reading an output",
            sys::ov_infer_request_get_output_tensor_by_index(self.request, index, &mut t),
        )?;
        let mut et = sys::ov_element_type_e::DYNAMIC;
        let mut n = 0usize;
        let mut data: *mut std::os::raw::c_void = ptr::null_mut();
        let r = check("element type", sys::ov_tensor_get_element_type(t, &mut et))
            .and_then(|()| check("size", sys::ov_tensor_get_size(t, &mut n)))
            .and_then(|()| check("data", sys::ov_tensor_data(t, &mut data)));
        let out = r.and_then(|()| match et {
            sys::ov_element_type_e::I64 => {
                Ok(std::slice::from_raw_parts(data as *const i64, n).to_vec())
            }
            sys::ov_element_type_e::I32 => Ok(std::slice::from_raw_parts(data as *const i32, n)
                .iter()
                .map(|v| i64::from(*v))
                .collect()),
            other => Err(format!(
                "output {index} has element type {other:?}, not integers"
            )),
        });
        sys::ov_tensor_free(t);
        out
    }
}
