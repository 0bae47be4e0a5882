//! Token minting for the tests, with a signing path of our own (HMAC from `hmac`/`sha2`, ECDSA
//! P-256 from `p256`, RSA from `rsa`); the server has no signing code and only verifies, with
//! `jsonwebtoken`. Also the secrets the test servers are started with.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

/// The HS256 secret the test servers are started with.
pub const SECRET: &str = "auth-test-secret-0123456789abcdef";

/// The operator key the test servers are started with.
pub const PUBLISHER_KEY: &str = "auth-test-publisher-key-0123456789";

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    i64::try_from(secs).unwrap()
}

/// Claims for `sub` with the given channel patterns, valid for five minutes.
pub fn claims(sub: &str, subscribe: &[&str], publish: &[&str]) -> Value {
    json!({
        "sub": sub,
        "exp": now() + 300,
        "iat": now(),
        "subscribe": subscribe,
        "publish": publish,
    })
}

/// Base64url without padding, as JWS uses.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS: `b64(header).b64(claims).b64(sign(signing input))`.
pub fn jws(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

/// HMAC-SHA-256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// HMAC-SHA-384 of `message` under `key`.
pub fn hmac_sha384(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha384>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// An HS256 token signed with [`SECRET`].
pub fn hs256(claims: &Value) -> String {
    hs256_with(SECRET.as_bytes(), claims)
}

/// An HS256 token signed with `secret`.
pub fn hs256_with(secret: &[u8], claims: &Value) -> String {
    jws(&json!({"alg": "HS256", "typ": "JWT"}), claims, |input| {
        hmac_sha256(secret, input)
    })
}

/// A token with header `{"alg": alg}` and an empty signature (`alg: none` and friends).
pub fn unsigned(alg: &str, claims: &Value) -> String {
    jws(&json!({"alg": alg, "typ": "JWT"}), claims, |_| Vec::new())
}

/// The token with one character of its signature changed.
pub fn tamper_signature(token: &str) -> String {
    let (input, signature) = token.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    bytes[0] ^= 0x01;
    format!("{input}.{}", b64(&bytes))
}

/// The token's header and signature around a different payload.
pub fn swap_payload(token: &str, claims: &Value) -> String {
    let mut parts = token.split('.');
    let header = parts.next().unwrap();
    let _payload = parts.next().unwrap();
    let signature = parts.next().unwrap();
    format!(
        "{header}.{}.{signature}",
        b64(claims.to_string().as_bytes())
    )
}

/// An ECDSA P-256 key pair, derived from a seed so tests need no random source.
pub struct EcKey(p256::ecdsa::SigningKey);

impl EcKey {
    /// The key whose secret scalar is SHA-256(`seed`).
    pub fn from_seed(seed: &str) -> EcKey {
        use sha2::Digest as _;
        let scalar = sha2::Sha256::digest(seed.as_bytes());
        EcKey(p256::ecdsa::SigningKey::from_slice(&scalar).unwrap())
    }

    /// The public key as SPKI PEM, as `--jwt-public-key` reads it.
    pub fn public_pem(&self) -> String {
        use p256::pkcs8::{EncodePublicKey as _, LineEnding};
        self.0
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap()
    }

    /// An ES256 token: the signature is the raw 64-byte `r || s`, as JWS requires.
    pub fn es256(&self, claims: &Value) -> String {
        use p256::ecdsa::signature::Signer as _;
        jws(&json!({"alg": "ES256", "typ": "JWT"}), claims, |input| {
            let signature: p256::ecdsa::Signature = self.0.sign(input);
            signature.to_bytes().to_vec()
        })
    }
}

/// An RSA-2048 key pair (generated: a second or two in a debug build).
pub struct RsaKey {
    signing: rsa::pkcs1v15::SigningKey<sha2::Sha256>,
    public_pem: String,
}

impl RsaKey {
    /// A fresh key pair from the operating system's random source.
    pub fn generate() -> RsaKey {
        use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let public_pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        RsaKey {
            signing: rsa::pkcs1v15::SigningKey::new(private),
            public_pem,
        }
    }

    /// The public key as SPKI PEM.
    pub fn public_pem(&self) -> String {
        self.public_pem.clone()
    }

    /// An RS256 token (RSASSA-PKCS1-v1_5 with SHA-256).
    pub fn rs256(&self, claims: &Value) -> String {
        use rsa::signature::{SignatureEncoding as _, Signer as _};
        jws(&json!({"alg": "RS256", "typ": "JWT"}), claims, |input| {
            self.signing.sign(input).to_vec()
        })
    }
}
