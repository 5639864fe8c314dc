//! Load-test fixtures: an RS256 key, its JWKS and public PEM, and N distinct signed tokens.
//!
//! `cargo run --release --example mint -- <out-dir> <issuer> <audience> <count>`
//!
//! Writes `<out-dir>/jwks.json`, `<out-dir>/public.pem` (for HAProxy's `jwt_verify`) and
//! `<out-dir>/tokens.txt` (one token per line, each with its own `jti`, valid for 7 days).
//! The key is generated once and kept in `<out-dir>/private.pk8`; signing uses every core.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

const KID: &str = "bench-rs256";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The modulus and exponent of a PKCS#1 `RSAPublicKey` (DER: SEQUENCE { INTEGER, INTEGER }).
fn rsa_components(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = b.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            let (bytes, rest) = (rest.get(..n)?, rest.get(n..)?);
            (
                bytes.iter().fold(0usize, |a, &x| a << 8 | usize::from(x)),
                rest,
            )
        };
        Some((tag, rest.get(..len)?, rest.get(len..)?))
    }
    let (0x30, seq, _) = tlv(der)? else {
        return None;
    };
    let (0x02, n, rest) = tlv(seq)? else {
        return None;
    };
    let (0x02, e, _) = tlv(rest)? else {
        return None;
    };
    let strip = |v: &[u8]| {
        v.iter()
            .skip_while(|&&b| b == 0)
            .copied()
            .collect::<Vec<u8>>()
    };
    Some((strip(n), strip(e)))
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn key(dir: &Path) -> RsaKeyPair {
    let path = dir.join("private.pk8");
    let der = match std::fs::read(&path) {
        Ok(der) => der,
        Err(_) => {
            let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("generate RSA key");
            let der = pair.as_der().expect("encode RSA key").as_ref().to_vec();
            std::fs::write(&path, &der).expect("write private key");
            der
        }
    };
    RsaKeyPair::from_pkcs8(&der).expect("read private key")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, issuer, audience, count] = args.as_slice() else {
        eprintln!("usage: mint <out-dir> <issuer> <audience> <count>");
        std::process::exit(2);
    };
    let dir = PathBuf::from(dir);
    let count: usize = count.parse().expect("count");
    std::fs::create_dir_all(&dir).expect("create out dir");
    let pair = key(&dir);

    let public = pair.public_key();
    let (n, e) = rsa_components(public.as_ref()).expect("RSA public key");
    let jwks = serde_json::json!({"keys": [{
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": KID, "n": b64(&n), "e": b64(&e),
    }]});
    std::fs::write(dir.join("jwks.json"), jwks.to_string()).expect("write jwks");
    let spki = public.as_der().expect("encode public key");
    std::fs::write(dir.join("public.pem"), pem("PUBLIC KEY", spki.as_ref()))
        .expect("write public key");

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let header = b64(format!(r#"{{"alg":"RS256","typ":"JWT","kid":"{KID}"}}"#).as_bytes());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = count.div_ceil(threads);
    let parts: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (pair, header) = (&pair, &header);
                s.spawn(move || {
                    let rng = SystemRandom::new();
                    let mut sig = vec![0; pair.public_modulus_len()];
                    let mut out = String::new();
                    for i in (t * per)..((t + 1) * per).min(count) {
                        let claims = serde_json::json!({
                            "iss": issuer, "aud": audience, "sub": "bench-user",
                            "scope": "read:items", "iat": now, "exp": now + 7 * 86_400,
                            "jti": format!("{i:08x}"),
                        });
                        let input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
                        pair.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
                            .expect("sign");
                        out.push_str(&input);
                        out.push('.');
                        out.push_str(&b64(&sig));
                        out.push('\n');
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("signer"))
            .collect()
    });
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(dir.join("tokens.txt")).expect("create tokens"),
    );
    for p in parts {
        f.write_all(p.as_bytes()).expect("write tokens");
    }
    f.flush().expect("flush tokens");
}
