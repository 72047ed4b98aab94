//! Talking to the Proxmox API. [`ProxmoxApi`] is one call (method, path, parameters → the JSON
//! `data`); [`Pvesh`] runs `pvesh` on the host, which acts as `root@pam` (the only user that may
//! give a container a device node or most features). Task waiting works on any transport.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The HTTP methods of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Reads (`pvesh get`).
    Get,
    /// Creates (`pvesh create`).
    Post,
    /// Changes (`pvesh set`).
    Put,
    /// Removes (`pvesh delete`).
    Delete,
}

impl Method {
    /// The HTTP method's name, as errors and progress lines show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }

    /// `pvesh`'s verb for the method.
    fn pvesh_verb(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "create",
            Method::Put => "set",
            Method::Delete => "delete",
        }
    }
}

/// Parameters in wire form, in the order they are sent.
pub type Params = [(String, String)];

/// Why an API call or a task failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `pvesh` could not be started.
    #[error("cannot run {}: {source}", program.display())]
    Spawn {
        /// The program that was run.
        program: PathBuf,
        /// Why it could not be.
        source: std::io::Error,
    },
    /// The call was turned down (`pvesh` failed, an HTTP status other than 200) or, over
    /// HTTPS, got no answer in time.
    #[error("{method} {path}: {message}")]
    Refused {
        /// The HTTP method ([`Method::as_str`]).
        method: &'static str,
        /// The API path called.
        path: String,
        /// Proxmox's reason, or the transport's.
        message: String,
    },
    /// The answer could not be parsed as JSON.
    #[error("{method} {path}: the answer is not JSON: {source}")]
    Decode {
        /// The HTTP method ([`Method::as_str`]).
        method: &'static str,
        /// The API path called.
        path: String,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A task stopped with an exit status other than `OK`.
    #[error("task {upid}: {exitstatus}")]
    TaskFailed {
        /// The task's id.
        upid: String,
        /// The status it stopped with.
        exitstatus: String,
    },
    /// A task was still running when [`wait_task`]'s timeout ran out.
    #[error("task {upid}: still running after {waited:?}")]
    TaskTimeout {
        /// The task's id.
        upid: String,
        /// How long it was waited for.
        waited: Duration,
    },
    /// What should have been a task id does not start `UPID:<node>:`.
    #[error("`{upid}` is not a task id (UPID)")]
    NotUpid {
        /// The text given as a task id.
        upid: String,
    },
}

/// One Proxmox API call, whatever the transport.
pub trait ProxmoxApi {
    /// Calls `path` (`/nodes/…`) and returns the answer's `data` (`null` when there is none).
    fn call(&self, method: Method, path: &str, params: &Params) -> Result<Value, ApiError>;

    /// A read without parameters.
    fn get(&self, path: &str) -> Result<Value, ApiError> {
        self.call(Method::Get, path, &[])
    }
    /// A create; long-running ones answer with a task id to [`wait_task`] on.
    fn post(&self, path: &str, params: &Params) -> Result<Value, ApiError> {
        self.call(Method::Post, path, params)
    }
    /// A change.
    fn put(&self, path: &str, params: &Params) -> Result<Value, ApiError> {
        self.call(Method::Put, path, params)
    }
    /// A removal without parameters.
    fn delete(&self, path: &str) -> Result<Value, ApiError> {
        self.call(Method::Delete, path, &[])
    }
}

/// The `pvesh` command on the Proxmox host.
#[derive(Debug, Clone)]
pub struct Pvesh {
    program: PathBuf,
}

impl Default for Pvesh {
    fn default() -> Self {
        Self::new("pvesh")
    }
}

impl Pvesh {
    /// `program` is `pvesh` on a host; tests point it at a shim.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
        }
    }
}

impl ProxmoxApi for Pvesh {
    fn call(&self, method: Method, path: &str, params: &Params) -> Result<Value, ApiError> {
        let mut cmd = Command::new(&self.program);
        cmd.arg(method.pvesh_verb()).arg(path);
        for (name, value) in params {
            cmd.arg(format!("--{name}")).arg(value);
        }
        cmd.args(["--output-format", "json"]);
        let out = cmd.output().map_err(|source| ApiError::Spawn {
            program: self.program.clone(),
            source,
        })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(ApiError::Refused {
                method: method.as_str(),
                path: path.to_owned(),
                message: format!("pvesh {}: {}", out.status, stderr.trim()),
            });
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        // `pvesh` prints nothing for calls that return null.
        if stdout.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&stdout).map_err(|source| ApiError::Decode {
            method: method.as_str(),
            path: path.to_owned(),
            source,
        })
    }
}

/// Waits for a task (`UPID:node:…`) to stop, polling its status; a stopped task whose
/// exit status is not `OK` is an error carrying that status.
pub fn wait_task(
    api: &dyn ProxmoxApi,
    upid: &str,
    timeout: Duration,
    poll: Duration,
) -> Result<(), ApiError> {
    let node = upid
        .strip_prefix("UPID:")
        .and_then(|rest| rest.split(':').next())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::NotUpid {
            upid: upid.to_owned(),
        })?;
    let path = format!("/nodes/{node}/tasks/{upid}/status");
    let started = Instant::now();
    loop {
        let status = api.get(&path)?;
        if status.get("status").and_then(Value::as_str) == Some("stopped") {
            let exit = status
                .get("exitstatus")
                .and_then(Value::as_str)
                .unwrap_or("no exit status");
            return if exit == "OK" {
                Ok(())
            } else {
                Err(ApiError::TaskFailed {
                    upid: upid.to_owned(),
                    exitstatus: exit.to_owned(),
                })
            };
        }
        if started.elapsed() >= timeout {
            return Err(ApiError::TaskTimeout {
                upid: upid.to_owned(),
                waited: started.elapsed(),
            });
        }
        std::thread::sleep(poll);
    }
}
