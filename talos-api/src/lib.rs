//! The Talos API as lab-bootstrap uses it: the v1.13 protos compiled at build time
//! ([`proto`]), a client over mutual TLS ([`client`]), and a stand-in apid for the local lab and
//! the tests ([`stand_in`]), speaking the same protos with the same PKI.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod archive;
pub mod client;
pub mod stand_in;

/// gRPC status codes, as [`client::Problem::Status`] carries them.
pub use tonic::Code;

/// The code generated from reference/talos/api (messages, clients and servers), by package.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    /// `common`: metadata, the `Data` chunks of streamed answers.
    pub mod common {
        tonic::include_proto!("common");
    }
    /// `machine`: MachineService (Bootstrap, Kubeconfig, Version, ApplyConfiguration, ...).
    pub mod machine {
        tonic::include_proto!("machine");
    }
    /// `cluster`: ClusterService.HealthCheck.
    pub mod cluster {
        tonic::include_proto!("cluster");
    }
    /// `google.rpc`: the gRPC status carried in metadata.
    pub mod google {
        /// `google.rpc.Status`.
        pub mod rpc {
            tonic::include_proto!("google.rpc");
        }
    }
}
