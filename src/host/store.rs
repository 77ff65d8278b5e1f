//! Envoy's shared data (one store per vm_id for the whole process) as a `table::Store`.

use super::ffi;
use crate::table::{Store, StoreError};

pub struct SharedData;

impl Store for SharedData {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        ffi::shared_data(key).map_err(|status| StoreError::Host(status.0))
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        match ffi::set_shared_data(key, value, cas) {
            Ok(()) => Ok(()),
            Err(ffi::Status(ffi::CAS_MISMATCH)) => Err(StoreError::CasMismatch),
            Err(status) => Err(StoreError::Host(status.0)),
        }
    }
}
