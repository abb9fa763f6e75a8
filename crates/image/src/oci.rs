//! The two image formats, read into one plan: which layers, in which order, with which digests.
//!
//! - An OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/...`): `index.json` is the
//!   root; everything it reaches (nested indexes, the manifest, the config, the layers) is named
//!   by sha256 and checked against it.
//! - A `docker save` archive (`manifest.json`, a config, layer tars): the config is named by its
//!   own sha256 (`<hex>.json`, or `blobs/sha256/<hex>` since Docker 25) and lists each layer's
//!   uncompressed sha256 (`rootfs.diff_ids`), which is checked.
//!
//! Docker 25+ writes both at once; the OCI view is preferred, as it names every blob.

use crate::digest::{sha256_hex, sha256_of};
use crate::error::{Result, SetupError, Step};
use crate::source::Source;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// `linux/amd64`, `linux/arm64/v8`, or just `arm64` (Linux assumed).
    pub fn parse(s: &str) -> Option<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [arch] => ("linux", *arch, None),
            [os, arch] => (*os, *arch, None),
            [os, arch, v] => (*os, *arch, Some(*v)),
            _ => return None,
        };
        if os.is_empty() || arch.is_empty() || variant == Some("") {
            return None;
        }
        Some(Platform { os: os.into(), architecture: normalize_arch(arch).into(), variant: variant.map(str::to_owned) })
    }

    /// The platform this binary runs on, in OCI's spelling.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Platform { os: "linux".into(), architecture: arch.into(), variant: None }
    }

    fn matches(&self, have: &OciPlatform) -> bool {
        if have.os != self.os || normalize_arch(&have.architecture) != self.architecture {
            return false;
        }
        match (&self.variant, &have.variant) {
            (None, _) => true,
            (Some(w), Some(h)) => w == h,
            // arm64 images often leave out their (only) variant.
            (Some(w), None) => self.architecture == "arm64" && w == "v8",
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

fn normalize_arch(a: &str) -> &str {
    match a {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<OciPlatform>,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
struct OciPlatform {
    os: String,
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Debug, Default, Deserialize)]
struct ImageConfig {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    config: Option<ContainerConfig>,
    #[serde(default)]
    rootfs: Option<RootfsConfig>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct ContainerConfig {
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// What the image says a container should run with, for the caller to pass on (camelCase).
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

impl From<ContainerConfig> for RuntimeConfig {
    fn from(c: ContainerConfig) -> Self {
        RuntimeConfig {
            env: c.env.unwrap_or_default(),
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            working_dir: c.working_dir.unwrap_or_default(),
            user: c.user.unwrap_or_default(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct RootfsConfig {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Oci,
    Docker,
}

/// One layer to apply, bottom first.
#[derive(Debug, Clone)]
pub struct LayerPlan {
    /// Its file inside the image.
    pub member: String,
    pub media_type: Option<String>,
    /// sha256 of the blob as stored (OCI descriptors; Docker 25+ blob paths).
    pub digest: Option<String>,
    /// sha256 of the uncompressed tar, from the config.
    pub diff_id: Option<String>,
    pub size: u64,
}

#[derive(Debug)]
pub struct ImagePlan {
    pub format: ImageFormat,
    pub platform: String,
    pub manifest_digest: Option<String>,
    pub layers: Vec<LayerPlan>,
    pub config: RuntimeConfig,
    /// Docker's layers are checked against their diff_ids before anything is written (they have
    /// no other digest); OCI's against their descriptors' digests, and diff_ids while unpacking.
    pub verify_diff_ids_first: bool,
}

fn bad(name: &str, what: impl std::fmt::Display) -> SetupError {
    SetupError::new(Step::ReadImage, format!("{name}: {what}")).with_path(name)
}

fn parse<T: for<'de> Deserialize<'de>>(name: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| bad(name, format!("not a valid image file: {e}")))
}

fn blob_name(digest: &str) -> Result<String> {
    let hex = sha256_hex(digest).ok_or_else(|| {
        SetupError::new(Step::ReadImage, format!("unsupported or malformed digest '{digest}' (only sha256:<64 lowercase hex> is supported)")).with_path(digest)
    })?;
    Ok(format!("blobs/sha256/{hex}"))
}

pub fn digest_mismatch(name: &str, want: &str, got: &str) -> SetupError {
    SetupError::new(Step::VerifyDigest, format!("{name} does not match its digest: expected {want}, got {got}"))
        .with_path(name)
        .with_hint("the image is corrupt or was tampered with; fetch it again")
}

/// A blob read whole and checked against its descriptor.
fn read_verified(src: &Source, d: &Descriptor) -> Result<Vec<u8>> {
    let name = blob_name(&d.digest)?;
    let bytes = src.read_small(&name)?;
    let got = sha256_of(&bytes);
    if got != d.digest {
        return Err(digest_mismatch(&name, &d.digest, &got));
    }
    if bytes.len() as u64 != d.size {
        return Err(SetupError::new(Step::VerifyDigest, format!("{name} is {} bytes; its descriptor says {}", bytes.len(), d.size)).with_path(&name));
    }
    Ok(bytes)
}

const INDEX_TYPES: &[&str] = &["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"];
const MANIFEST_TYPES: &[&str] = &["application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"];
/// The most manifests and indexes an image's indexes may list together (a multi-platform image
/// lists a few dozen).
const MOST_LISTED: usize = 10_000;
const REF_ANNOTATIONS: &[&str] = &["org.opencontainers.image.ref.name", "io.containerd.image.name"];

/// Read the image at `src` and decide what to apply.
pub fn plan(src: &Source, want: Option<&Platform>, reference: Option<&str>) -> Result<ImagePlan> {
    if src.exists("oci-layout") && src.exists("index.json") {
        plan_oci(src, want, reference)
    } else if src.exists("manifest.json") {
        plan_docker(src, want, reference)
    } else {
        Err(SetupError::new(
            Step::ReadImage,
            format!("{} is neither an OCI image layout (oci-layout, index.json, blobs/) nor a docker save archive (manifest.json)", src.path()),
        )
        .with_path(src.path())
        .with_hint("for a root filesystem tarball use unpackRootfs / isolate rootfs unpack"))
    }
}

fn plan_oci(src: &Source, want: Option<&Platform>, reference: Option<&str>) -> Result<ImagePlan> {
    let layout: serde_json::Value = parse("oci-layout", &src.read_small("oci-layout")?)?;
    if layout.get("imageLayoutVersion").and_then(|v| v.as_str()).is_none() {
        return Err(bad("oci-layout", "has no imageLayoutVersion"));
    }
    let index: Index = parse("index.json", &src.read_small("index.json")?)?;
    let mut top = index.manifests;
    if let Some(r) = reference {
        let refs: Vec<String> = top.iter().flat_map(|d| REF_ANNOTATIONS.iter().filter_map(|a| d.annotations.get(*a).cloned())).collect();
        top.retain(|d| REF_ANNOTATIONS.iter().any(|a| d.annotations.get(*a).map(String::as_str) == Some(r)));
        if top.is_empty() {
            return Err(bad("index.json", format!("no image named '{r}'; it names: {}", list_or_none(&refs))));
        }
    }
    // Nested indexes (a multi-platform image inside the layout) flattened; other artifacts left out.
    // Each index is read once, and the descriptors they list together are bounded: an index that
    // lists another a thousand times, nested, would otherwise be read a billion times.
    let mut manifests = Vec::new();
    let mut queue: Vec<(Descriptor, usize)> = top.into_iter().map(|d| (d, 0)).collect();
    let mut indexes_read = std::collections::HashSet::new();
    let mut listed = queue.len();
    while let Some((d, depth)) = queue.pop() {
        if INDEX_TYPES.contains(&d.media_type.as_str()) {
            if depth >= 4 {
                return Err(bad("index.json", "image indexes nested too deep"));
            }
            if !indexes_read.insert(d.digest.clone()) {
                continue;
            }
            let nested: Index = parse(&blob_name(&d.digest)?, &read_verified(src, &d)?)?;
            listed += nested.manifests.len();
            if listed > MOST_LISTED {
                return Err(bad("index.json", format!("its image indexes list more than {MOST_LISTED} manifests and indexes together")));
            }
            queue.extend(nested.manifests.into_iter().rev().map(|n| (n, depth + 1)));
        } else if MANIFEST_TYPES.contains(&d.media_type.as_str()) || d.media_type.is_empty() {
            manifests.push(d);
        }
    }
    manifests.reverse();
    let host = Platform::host();
    let wanted = want.unwrap_or(&host);
    let available: Vec<String> = manifests.iter().filter_map(|d| d.platform.as_ref()).map(describe).collect();
    let mut matching: Vec<&Descriptor> = manifests
        .iter()
        .filter(|d| match &d.platform {
            Some(p) => wanted.matches(p),
            None => true,
        })
        .collect();
    // The same manifest listed twice (under two names) is one image.
    let mut seen = std::collections::HashSet::new();
    matching.retain(|d| seen.insert(d.digest.clone()));
    let chosen = match matching.as_slice() {
        [] => {
            return Err(bad("index.json", format!("no image for {wanted}; it has: {}", list_or_none(&available)))
                .with_hint("choose one with the platform option (isolate rootfs import --platform OS/ARCH)"))
        }
        [one] => (*one).clone(),
        many => {
            let names: Vec<String> = many.iter().map(|d| d.annotations.get(REF_ANNOTATIONS[0]).cloned().unwrap_or_else(|| d.digest.clone())).collect();
            return Err(bad("index.json", format!("several images match {wanted}: {}", names.join(", ")))
                .with_hint("choose one with the ref option (isolate rootfs import --ref NAME)"));
        }
    };
    let manifest_name = blob_name(&chosen.digest)?;
    let manifest: Manifest = parse(&manifest_name, &read_verified(src, &chosen)?)?;
    let config_name = blob_name(&manifest.config.digest)?;
    let config: ImageConfig = parse(&config_name, &read_verified(src, &manifest.config)?)?;
    let platform = check_platform(&config, chosen.platform.is_none(), want, &config_name)?;
    let diff_ids = config.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    if !diff_ids.is_empty() && diff_ids.len() != manifest.layers.len() {
        return Err(bad(&config_name, format!("lists {} diff_ids for {} layers", diff_ids.len(), manifest.layers.len())));
    }
    let mut layers = Vec::new();
    for (i, l) in manifest.layers.iter().enumerate() {
        if !l.media_type.is_empty() && !l.media_type.contains("tar") {
            return Err(bad(&manifest_name, format!("layer {i} has media type {}, which is not a tar layer", l.media_type)));
        }
        if l.media_type.contains("encrypted") {
            return Err(bad(&manifest_name, format!("layer {i} is encrypted ({})", l.media_type)));
        }
        layers.push(LayerPlan {
            member: blob_name(&l.digest)?,
            media_type: Some(l.media_type.clone()),
            digest: Some(l.digest.clone()),
            diff_id: diff_ids.get(i).cloned(),
            size: l.size,
        });
    }
    Ok(ImagePlan {
        format: ImageFormat::Oci,
        platform,
        manifest_digest: Some(chosen.digest),
        layers,
        config: config.config.unwrap_or_default().into(),
        verify_diff_ids_first: false,
    })
}

fn plan_docker(src: &Source, want: Option<&Platform>, reference: Option<&str>) -> Result<ImagePlan> {
    let mut images: Vec<DockerManifest> = parse("manifest.json", &src.read_small("manifest.json")?)?;
    let tags: Vec<String> = images.iter().flat_map(|m| m.repo_tags.clone().unwrap_or_default()).collect();
    if let Some(r) = reference {
        let with_latest = format!("{r}:latest");
        images.retain(|m| m.repo_tags.as_ref().is_some_and(|t| t.iter().any(|t| t == r || *t == with_latest)));
        if images.is_empty() {
            return Err(bad("manifest.json", format!("no image tagged '{r}'; it has: {}", list_or_none(&tags))));
        }
    }
    let image = match images.len() {
        0 => return Err(bad("manifest.json", "lists no image")),
        1 => images.remove(0),
        _ => {
            return Err(bad("manifest.json", format!("holds several images: {}", list_or_none(&tags)))
                .with_hint("choose one with the ref option (isolate rootfs import --ref NAME)"))
        }
    };
    let config_name = clean(&image.config)?;
    let bytes = src.read_small(&config_name)?;
    // The config's name is its own digest (the image ID): `<hex>.json` or `blobs/sha256/<hex>`.
    let leaf = config_name.rsplit('/').next().unwrap_or_default();
    let named = leaf.strip_suffix(".json").unwrap_or(leaf);
    let claimed = format!("sha256:{named}");
    if sha256_hex(&claimed).is_some() {
        let got = sha256_of(&bytes);
        if got != claimed {
            return Err(digest_mismatch(&config_name, &claimed, &got));
        }
    }
    let config: ImageConfig = parse(&config_name, &bytes)?;
    let platform = check_platform(&config, true, want, &config_name)?;
    let diff_ids = config.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    if diff_ids.len() != image.layers.len() {
        return Err(bad(&config_name, format!("lists {} diff_ids for {} layers", diff_ids.len(), image.layers.len())));
    }
    let mut layers = Vec::new();
    for (i, member) in image.layers.iter().enumerate() {
        let member = clean(member)?;
        let digest = member.strip_prefix("blobs/sha256/").map(|h| format!("sha256:{h}")).filter(|d| sha256_hex(d).is_some());
        let (_, size) = src.open_member(&member)?;
        layers.push(LayerPlan { member, media_type: None, digest, diff_id: Some(diff_ids[i].clone()), size });
    }
    Ok(ImagePlan {
        format: ImageFormat::Docker,
        platform,
        manifest_digest: None,
        layers,
        config: config.config.unwrap_or_default().into(),
        verify_diff_ids_first: true,
    })
}

/// A path named by a manifest, as a canonical relative path inside the image.
fn clean(name: &str) -> Result<String> {
    let comps = crate::names::components(name.as_bytes()).map_err(|t| bad("manifest.json", t.describe(&format!("the path '{name}'"))))?;
    if comps.is_empty() {
        return Err(bad("manifest.json", "an empty path"));
    }
    Ok(String::from_utf8_lossy(&crate::names::join(&comps)).into_owned())
}

/// The image's platform as its config states it, checked against the one asked for where the
/// index did not already choose by platform.
fn check_platform(config: &ImageConfig, unchecked: bool, want: Option<&Platform>, name: &str) -> Result<String> {
    let have = OciPlatform { os: config.os.clone(), architecture: config.architecture.clone(), variant: config.variant.clone() };
    let described = if have.os.is_empty() { "unknown".to_owned() } else { describe(&have) };
    if unchecked && !have.os.is_empty() {
        let host = Platform::host();
        let wanted = want.unwrap_or(&host);
        if !wanted.matches(&have) {
            let hint = if want.is_some() {
                "this image has no other platform".to_owned()
            } else {
                format!("to import it anyway, ask for it: platform '{described}' (isolate rootfs import --platform {described})")
            };
            return Err(bad(name, format!("the image is for {described}, not {wanted}")).with_hint(hint));
        }
    }
    Ok(described)
}

fn describe(p: &OciPlatform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!(p.matches(&OciPlatform { os: "linux".into(), architecture: "arm64".into(), variant: None }));
        assert!(!p.matches(&OciPlatform { os: "linux".into(), architecture: "amd64".into(), variant: None }));
        assert_eq!(Platform::parse("x86_64").unwrap().to_string(), "linux/amd64");
        let any = Platform::parse("linux/arm").unwrap();
        assert!(any.matches(&OciPlatform { os: "linux".into(), architecture: "arm".into(), variant: Some("v7".into()) }));
        assert!(Platform::parse("linux/").is_none());
        assert!(Platform::parse("a/b/c/d").is_none());
    }

    #[test]
    fn blob_names_only_from_sha256() {
        assert!(blob_name("sha256:../../../etc/passwd").is_err());
        assert_eq!(blob_name(&sha256_of(b"")).unwrap(), "blobs/sha256/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    /// An OCI layout in a new temp dir: `index.json` listing `top`, and `blobs`.
    fn layout(name: &str, top: &[u8], blobs: &[&[u8]]) -> (std::path::PathBuf, Source) {
        use std::os::fd::AsFd;
        let dir = std::env::temp_dir().join(format!("isolate-oci-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        std::fs::write(dir.join("index.json"), top).unwrap();
        for b in blobs {
            std::fs::write(dir.join("blobs/sha256").join(&sha256_of(b)["sha256:".len()..]), b).unwrap();
        }
        let fd = Source::open_path(&dir).unwrap();
        let scratch = fd.try_clone().unwrap();
        (dir.clone(), Source::from_fd(fd, dir.display().to_string(), scratch.as_fd(), None, &mut |_, _| {}).unwrap())
    }

    /// An index of `n` descriptors of `blob`, of media type `kind`.
    fn index_of(blob: &[u8], kind: &str, n: usize) -> Vec<u8> {
        let d = format!(r#"{{"mediaType":"{kind}","digest":"{}","size":{}}}"#, sha256_of(blob), blob.len());
        format!(r#"{{"schemaVersion":2,"manifests":[{}]}}"#, vec![d; n].join(",")).into_bytes()
    }

    #[test]
    fn nested_indexes_are_read_once_each_and_what_they_list_is_bounded() {
        const INDEX: &str = "application/vnd.oci.image.index.v1+json";
        // 1000 x 1000 x 1000 listings of one index: read once each (else a billion reads, hours).
        let leaf = index_of(b"not an image", "application/x-nothing", 1);
        let l0 = index_of(&leaf, INDEX, 1000);
        let l1 = index_of(&l0, INDEX, 1000);
        let (dir, src) = layout("fanout", &index_of(&l1, INDEX, 1000), &[&leaf, &l0, &l1]);
        let e = plan(&src, None, None).unwrap_err();
        assert!(e.message.contains("no image for"), "{}", e.message);
        std::fs::remove_dir_all(dir).unwrap();
        // Distinct indexes that together list too much.
        let many: Vec<Vec<u8>> = (0..11).map(|i| index_of(format!("blob {i}").as_bytes(), "application/x-nothing", 1000)).collect();
        let top: Vec<String> = many.iter().map(|b| format!(r#"{{"mediaType":"{INDEX}","digest":"{}","size":{}}}"#, sha256_of(b), b.len())).collect();
        let top = format!(r#"{{"schemaVersion":2,"manifests":[{}]}}"#, top.join(","));
        let (dir, src) = layout("many", top.as_bytes(), &many.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let e = plan(&src, None, None).unwrap_err();
        assert!(e.message.contains("more than 10000 manifests and indexes"), "{}", e.message);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn manifest_paths_are_checked() {
        assert_eq!(clean("./abc/layer.tar").unwrap(), "abc/layer.tar");
        assert!(clean("../x").is_err());
        assert!(clean("/etc/passwd").is_err());
    }
}
