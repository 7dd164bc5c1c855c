//! What controllers sharing one etcd must share besides the objects: the
//! cluster CA. Agents and clients trust one CA, whichever controller they talk
//! to, so the first controller on an etcd puts its CA there and the others take
//! it (k3s keeps its bootstrap data in its datastore the same way).
//!
//! It is kept under the prefix at a key no object can have, so it is never
//! served by the API; whoever can read etcd can read it, so etcd must be
//! reachable only by the controllers (client certificates: `--etcd-cert`).

use std::path::Path;

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};

use super::{EtcdStore, etcd_error};
use crate::pki;
use crate::store::StoreError;

#[derive(Serialize, Deserialize, PartialEq, Eq)]
struct SharedCa {
    cert: String,
    key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error(
        "the cluster CA in {dir}/tls differs from the one the other controllers on this etcd use: remove ca.crt and ca.key there (and server.crt, server.key) to take the cluster's, or use another --etcd-prefix for another cluster"
    )]
    Mismatch { dir: String },
    #[error("the cluster CA kept in etcd cannot be read: {0}")]
    Unreadable(String),
}

impl EtcdStore {
    /// Makes the CA in `data_dir` the cluster's: the one in etcd when there is
    /// one, else this one (made now if `data_dir` has none), put there for the
    /// others.
    pub async fn share_cluster_ca(&self, data_dir: &Path) -> Result<(), BootstrapError> {
        let key = format!("{}_cluster_ca", self.prefix).into_bytes();
        let local = pki::local_ca(data_dir)?.map(|(cert, key)| SharedCa { cert, key });
        let response = self
            .members
            .read(|mut kv| {
                let key = key.clone();
                async move { kv.get(key, None).await }
            })
            .await
            .map_err(|e| etcd_error("read the cluster CA", e))?;
        let shared = match response.kvs().first() {
            Some(kv) => Some(parse(kv.value())?),
            None => None,
        };
        let dir = data_dir.display().to_string();
        match (local, shared) {
            (Some(local), Some(shared)) if local == shared => Ok(()),
            (Some(_), Some(_)) => Err(BootstrapError::Mismatch { dir }),
            (None, Some(shared)) => {
                pki::install_ca(data_dir, &shared.cert, &shared.key)?;
                tracing::info!(dir = %dir, "took the cluster CA from etcd");
                Ok(())
            }
            (local, None) => {
                let offered = match local {
                    Some(local) => local,
                    None => {
                        let (cert, key) = pki::new_ca()?;
                        SharedCa { cert, key }
                    }
                };
                let value = serde_json::to_vec(&offered)
                    .map_err(|e| etcd_error("encode the cluster CA", e))?;
                // Only if no other controller got there first.
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.clone(), value, None)])
                    .or_else([TxnOp::get(key, None)]);
                let response = self
                    .txn(txn)
                    .await
                    .map_err(|e| etcd_error("store the cluster CA", e))?;
                let ca = if response.succeeded() {
                    tracing::info!(dir = %dir, "this controller's CA is now the cluster's");
                    offered
                } else {
                    let theirs = response.op_responses().into_iter().find_map(|r| match r {
                        TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
                        _ => None,
                    });
                    let theirs = parse(&theirs.unwrap_or_default())?;
                    if pki::local_ca(data_dir)?.is_some() && theirs != offered {
                        return Err(BootstrapError::Mismatch { dir });
                    }
                    theirs
                };
                pki::install_ca(data_dir, &ca.cert, &ca.key)?;
                Ok(())
            }
        }
    }
}

fn parse(value: &[u8]) -> Result<SharedCa, BootstrapError> {
    serde_json::from_slice(value).map_err(|e| BootstrapError::Unreadable(e.to_string()))
}
