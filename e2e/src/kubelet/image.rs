//! Container images as local programs: the kubelet's image table.
//!
//! There is no registry and no container runtime here. An image is what the kubelet
//! needs to start it: its `ENTRYPOINT` and `CMD`, its `USER`, and the programs it ships at
//! their paths inside the image, each mapped to a local file (the agentmesh images to the
//! workspace's built binaries). The image's filesystem is otherwise the host's.
//!
//! This module only resolves names; it starts nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::binary;

use super::KubeletError;

/// An image as the kubelet runs it.
#[derive(Debug, Clone)]
pub struct Image {
    /// `ENTRYPOINT`: replaced by a container's `command`.
    pub entrypoint: Vec<String>,
    /// `CMD`: replaced by a container's `args` (and dropped when `command` is set).
    pub cmd: Vec<String>,
    /// `USER` (UID, GID): used unless the security context says otherwise.
    pub user: (i64, i64),
    /// Programs of the image, by their path inside it, and the local file that is run
    /// for each (a container's, hook's or probe's `argv[0]` is looked up here first).
    pub programs: BTreeMap<String, PathBuf>,
}

impl Image {
    /// An image whose entrypoint is `program` at `path`, run as `user`.
    pub fn program(path: &str, local: PathBuf, user: (i64, i64)) -> Image {
        Image {
            entrypoint: vec![path.to_string()],
            cmd: Vec::new(),
            user,
            programs: BTreeMap::from([(path.to_string(), local)]),
        }
    }
}

/// Images by repository (`ghcr.io/agentmesh/agentmesh-proxy`); any tag or digest of a
/// repository is the same local image.
#[derive(Debug, Clone, Default)]
pub struct ImageTable {
    images: BTreeMap<String, Image>,
}

/// The repository of the agentmesh images (the chart's `image.registry`).
pub const AGENTMESH_REGISTRY: &str = "ghcr.io/agentmesh";

impl ImageTable {
    /// The agentmesh images of the Dockerfile, each running the workspace's freshly
    /// built binary at the image's path: `agentmesh-proxy` (USER 1501) and
    /// `agentmesh-init` (USER 0).
    pub fn agentmesh() -> Result<ImageTable, KubeletError> {
        let mut table = ImageTable::default();
        for (name, user) in [
            ("agentmesh-proxy", (1501, 1501)),
            ("agentmesh-init", (0, 0)),
        ] {
            let local = binary(name)?;
            table.images.insert(
                format!("{AGENTMESH_REGISTRY}/{name}"),
                Image::program(&format!("/usr/local/bin/{name}"), local, user),
            );
        }
        Ok(table)
    }

    /// Adds (or replaces) the image of `repository`.
    pub fn with(mut self, repository: &str, image: Image) -> ImageTable {
        self.images.insert(repository.to_string(), image);
        self
    }

    /// The image a container names (`repo[:tag][@digest]`), or `ErrImagePull`.
    pub fn resolve(&self, container: &str, reference: &str) -> Result<&Image, KubeletError> {
        self.images
            .get(repository(reference))
            .ok_or_else(|| KubeletError::ImageNotFound {
                container: container.to_string(),
                image: reference.to_string(),
                known: self.images.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }
}

/// `ghcr.io/agentmesh/agentmesh-proxy:0.1.0@sha256:…` → `ghcr.io/agentmesh/agentmesh-proxy`
/// (a `:` after the last `/` starts the tag; one before it is a registry's port).
pub fn repository(reference: &str) -> &str {
    let name = reference.split('@').next().unwrap_or(reference);
    match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::repository;

    #[test]
    fn tags_and_digests_name_the_same_repository() {
        for r in [
            "ghcr.io/agentmesh/agentmesh-proxy",
            "ghcr.io/agentmesh/agentmesh-proxy:0.1.0",
            "ghcr.io/agentmesh/agentmesh-proxy:0.1.0@sha256:abc",
        ] {
            assert_eq!(repository(r), "ghcr.io/agentmesh/agentmesh-proxy");
        }
        assert_eq!(
            repository("registry.local:5000/agent"),
            "registry.local:5000/agent"
        );
    }
}
