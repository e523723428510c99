//! `zmq-proxy keygen`: CURVE keypairs for operators to hand out.

/// `zmq-proxy keygen`: a new keypair as two Z85 lines, or a zcert pair on disk (the secret
/// file created with mode 0600, never wider). The error is one line for `zmq-proxy: error: `.
pub fn keygen(zcert: Option<&std::path::Path>) -> Result<(), String> {
    use std::io::Write;
    let secret = crate::wire::curve::SecretKey::generate();
    let public = secret.public_key();
    let Some(path) = zcert else {
        let z = secret.to_z85();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "public-key = {public}");
        let _ = writeln!(out, "secret-key = {}", z.as_str());
        return Ok(());
    };
    let mut secret_path = path.as_os_str().to_owned();
    secret_path.push("_secret");
    let secret_path = std::path::PathBuf::from(secret_path);
    let write_secret = || -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&secret_path)?;
        f.write_all(crate::wire::curve::zcert_secret_text(&secret).as_bytes())
    };
    if let Err(e) = write_secret() {
        return Err(format!("cannot write {}: {e}", secret_path.display()));
    }
    if let Err(e) = std::fs::write(path, crate::wire::curve::zcert_public_text(&public)) {
        return Err(format!("cannot write {}: {e}", path.display()));
    }
    println!("public-key = {public}");
    println!("wrote {} and {}", path.display(), secret_path.display());
    Ok(())
}
