//! A VarBuilder backend over a checkpoint that behaves like `load_state_dict(strict=True)`:
//! a missing key or a shape mismatch fails at the request, and keys never requested are
//! reported afterwards (except the ones the reference leaves unused).

use super::{is_unused_key, Checkpoint, Error};
use candle_core::{DType, Device, Shape, Tensor};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct StrictLoader {
    ckpt: Arc<Checkpoint>,
    used: Arc<Mutex<HashSet<String>>>,
    /// The first strict-loading error, kept with its full detail (candle errors flatten it).
    first_error: Arc<Mutex<Option<Error>>>,
}

impl StrictLoader {
    pub fn new(ckpt: Arc<Checkpoint>) -> Self {
        Self {
            ckpt,
            used: Default::default(),
            first_error: Default::default(),
        }
    }

    fn fail(&self, e: Error) -> candle_core::Error {
        let msg = e.to_string();
        let mut slot = self.first_error.lock().unwrap();
        if slot.is_none() {
            *slot = Some(e);
        }
        candle_core::Error::Msg(msg)
    }

    /// The detailed error behind a failed model build, if it came from here.
    pub fn take_error(&self) -> Option<Error> {
        self.first_error.lock().unwrap().take()
    }

    /// Keys of the checkpoint that the model did not ask for and that are not known extras.
    pub fn check_unexpected(&self) -> Result<(), Error> {
        let used = self.used.lock().unwrap();
        let extra: Vec<&str> = self
            .ckpt
            .keys()
            .filter(|k| !used.contains(*k) && !is_unused_key(k))
            .map(String::as_str)
            .collect();
        if extra.is_empty() {
            return Ok(());
        }
        let shown: Vec<String> = extra.iter().take(8).map(|k| format!("`{k}`")).collect();
        let more = if extra.len() > 8 {
            format!(" and {} more", extra.len() - 8)
        } else {
            String::new()
        };
        Err(Error::UnexpectedKeys {
            path: self.ckpt.path.clone(),
            keys: format!("{}{more}", shown.join(", ")),
        })
    }
}

impl candle_nn::var_builder::SimpleBackend for StrictLoader {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let Some(found) = self.ckpt.shape(name) else {
            return Err(self.fail(Error::MissingKey {
                path: self.ckpt.path.clone(),
                key: name.to_string(),
                expected: s.dims().to_vec(),
            }));
        };
        if found != s.dims() {
            return Err(self.fail(Error::Shape {
                path: self.ckpt.path.clone(),
                key: name.to_string(),
                found: found.to_vec(),
                expected: s.dims().to_vec(),
            }));
        }
        self.used.lock().unwrap().insert(name.to_string());
        self.ckpt.tensor(name, dtype, dev).map_err(|e| self.fail(e))
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        if self.ckpt.shape(name).is_none() {
            return Err(self.fail(Error::MissingKey {
                path: self.ckpt.path.clone(),
                key: name.into(),
                expected: vec![],
            }));
        }
        self.used.lock().unwrap().insert(name.to_string());
        self.ckpt.tensor(name, dtype, dev).map_err(|e| self.fail(e))
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.ckpt.shape(name).is_some()
    }
}

/// Keeps a backend reachable after a VarBuilder takes ownership of its box (to read back what
/// it recorded).
pub struct Shared<B>(pub Arc<B>);

impl<B: candle_nn::var_builder::SimpleBackend> candle_nn::var_builder::SimpleBackend for Shared<B> {
    fn get(
        &self,
        s: Shape,
        n: &str,
        h: candle_nn::Init,
        d: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0.get(s, n, h, d, dev)
    }
    fn get_unchecked(&self, n: &str, d: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.get_unchecked(n, d, dev)
    }
    fn contains_tensor(&self, n: &str) -> bool {
        self.0.contains_tensor(n)
    }
}
