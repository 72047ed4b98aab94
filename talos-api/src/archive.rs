//! The archive Talos's `Kubeconfig` call streams: a gzipped tar holding one file,
//! `kubeconfig`. Read with bounds, since it comes from the network.

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use std::io::Read;

/// The name of the file in the archive.
pub const KUBECONFIG_ENTRY: &str = "kubeconfig";

/// The most a kubeconfig may take, unpacked: an admin kubeconfig is a few kilobytes.
pub const MAX_KUBECONFIG: u64 = 1 << 20;

/// Why the archive did not give a kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Not a gzipped tar, or cut short.
    #[error("not a gzipped tar archive: {0}")]
    Corrupt(std::io::Error),
    /// The archive has no `kubeconfig` file.
    #[error("the archive holds no `kubeconfig` file")]
    Missing,
    /// The file is larger than [`MAX_KUBECONFIG`].
    #[error("the `kubeconfig` file is larger than {MAX_KUBECONFIG} bytes")]
    TooLarge,
}

/// `kubeconfig` packed as Talos sends it: a tar holding the one file (0600), gzipped.
pub fn pack_kubeconfig(kubeconfig: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::default()));
    let mut header = tar::Header::new_gnu();
    header.set_size(kubeconfig.len() as u64);
    header.set_mode(0o600);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, KUBECONFIG_ENTRY, kubeconfig)?;
    tar.into_inner()?.finish()
}

/// The `kubeconfig` file of a gzipped tar, read no further than [`MAX_KUBECONFIG`].
pub fn unpack_kubeconfig(archive: &[u8]) -> Result<Vec<u8>, ArchiveError> {
    let mut tar = tar::Archive::new(GzDecoder::new(archive));
    for entry in tar.entries().map_err(ArchiveError::Corrupt)? {
        let entry = entry.map_err(ArchiveError::Corrupt)?;
        let path = entry.path().map_err(ArchiveError::Corrupt)?;
        let name = path.to_string_lossy();
        if name.trim_start_matches("./") != KUBECONFIG_ENTRY
            || entry.header().entry_type() != tar::EntryType::Regular
        {
            continue;
        }
        if entry.size() > MAX_KUBECONFIG {
            return Err(ArchiveError::TooLarge);
        }
        let mut contents = Vec::new();
        entry
            .take(MAX_KUBECONFIG + 1)
            .read_to_end(&mut contents)
            .map_err(ArchiveError::Corrupt)?;
        if contents.len() as u64 > MAX_KUBECONFIG {
            return Err(ArchiveError::TooLarge);
        }
        return Ok(contents);
    }
    Err(ArchiveError::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        for (name, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o600);
            tar.append_data(&mut header, name, *data).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn the_kubeconfig_comes_back_out_of_what_pack_makes() {
        let text = b"apiVersion: v1\nkind: Config\n";
        assert_eq!(
            unpack_kubeconfig(&pack_kubeconfig(text).unwrap()).unwrap(),
            text
        );
    }

    #[test]
    fn other_files_are_skipped_and_a_missing_kubeconfig_is_said() {
        let archive = tar_gz(&[("README", b"x"), ("kubeconfig", b"config")]);
        assert_eq!(unpack_kubeconfig(&archive).unwrap(), b"config");
        let archive = tar_gz(&[("README", b"x")]);
        assert!(matches!(
            unpack_kubeconfig(&archive),
            Err(ArchiveError::Missing)
        ));
    }

    #[test]
    fn a_kubeconfig_over_the_bound_is_refused_without_reading_it_all() {
        // Compresses to a few kilobytes, unpacks past the bound.
        let huge = vec![b'a'; usize::try_from(MAX_KUBECONFIG).unwrap() + 1];
        let archive = tar_gz(&[("kubeconfig", &huge)]);
        assert!(archive.len() < 64 * 1024, "{}", archive.len());
        assert!(matches!(
            unpack_kubeconfig(&archive),
            Err(ArchiveError::TooLarge)
        ));
    }

    #[test]
    fn what_is_not_a_gzipped_tar_is_said_to_be_so() {
        assert!(matches!(
            unpack_kubeconfig(b"kubeconfig"),
            Err(ArchiveError::Corrupt(_))
        ));
        let mut cut = pack_kubeconfig(b"apiVersion: v1\n").unwrap();
        cut.truncate(cut.len() / 2);
        assert!(unpack_kubeconfig(&cut).is_err());
        let mut plain = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        plain.write_all(b"apiVersion: v1\n").unwrap();
        assert!(unpack_kubeconfig(&plain.finish().unwrap()).is_err());
    }
}
