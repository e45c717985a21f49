"""Encrypted backups: AES-256-GCM in 1 MiB chunks, the key derived from a passphrase with scrypt.

File layout (all of it authenticated):

    MAGIC (8 bytes) | salt (16) | scrypt log2(n), r, p (1 byte each) | chunk size (4, big-endian)
    then chunks: AES-GCM(plaintext chunk) + 16-byte tag, each a full chunk except the last

Every chunk's nonce is its number and a last-chunk flag (the "STREAM" construction): the key is new for every
file (a random salt), so nonces never repeat under one key, and a removed, reordered or appended chunk fails
authentication like a changed byte. The header is the associated data of every chunk. The passphrase comes
from $SPINE_BACKUP_PASSPHRASE or a key file (its bytes, one trailing newline ignored), never a command line.
Chunks keep memory flat for any size of store.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

MAGIC = b"SPINEBK1"
PASSPHRASE_ENV = "SPINE_BACKUP_PASSPHRASE"
CHUNK = 1 << 20
TAG = 16
SALT = 16
SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P = 15, 8, 1  # 32 MiB and about 0.1 s per derivation
MIN_SECRET = 12
_HEADER = struct.Struct(f">{len(MAGIC)}s{SALT}sBBBI")


class EncryptionError(RuntimeError):
    """A key that is missing, too short or wrong, or an encrypted file that was changed."""


def secret_from(key_file: str | Path | None = None, environ: dict[str, str] | None = None) -> bytes | None:
    """The secret from a key file, else from $SPINE_BACKUP_PASSPHRASE; None when neither is given."""
    environ = os.environ if environ is None else environ
    if key_file is not None:
        try:
            secret = Path(key_file).read_bytes()
        except OSError as problem:
            raise EncryptionError(f"the key file {key_file} cannot be read ({problem.strerror})") from None
        secret = secret[:-1] if secret.endswith(b"\n") else secret
        where = f"the key file {key_file}"
    elif environ.get(PASSPHRASE_ENV):
        secret, where = environ[PASSPHRASE_ENV].encode(), PASSPHRASE_ENV
    else:
        return None
    if len(secret) < MIN_SECRET:
        raise EncryptionError(f"{where} holds fewer than {MIN_SECRET} bytes: use a longer passphrase or key")
    return secret


def is_encrypted(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(MAGIC)) == MAGIC


def _key(secret: bytes, salt: bytes, log2_n: int, r: int, p: int) -> AESGCM:
    if not (10 <= log2_n <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
        raise EncryptionError("the encrypted backup's key parameters are out of range (a damaged file?)")
    return AESGCM(Scrypt(salt=salt, length=32, n=1 << log2_n, r=r, p=p).derive(secret))


def _nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def encrypt_file(plain: Path, out: Path, secret: bytes) -> None:
    """Write `plain` encrypted to the new file `out` (created 0600)."""
    header = _HEADER.pack(MAGIC, os.urandom(SALT), SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P, CHUNK)
    aead = _key(secret, *_HEADER.unpack(header)[1:5])
    with open(plain, "rb") as source, os.fdopen(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600),
                                                 "wb") as target:
        target.write(header)
        index, chunk = 0, source.read(CHUNK)
        while True:
            following = source.read(CHUNK)
            last = not following
            target.write(aead.encrypt(_nonce(index, last), chunk, header))
            if last:
                break
            index, chunk = index + 1, following
        target.flush()
        os.fsync(target.fileno())


def decrypt_file(encrypted: Path, out: Path, secret: bytes) -> None:
    """Write the decrypted `encrypted` to the new file `out` (0600); EncryptionError if the key is wrong or
    the file was changed, and then `out` is removed."""
    try:
        with open(encrypted, "rb") as source, os.fdopen(
                os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as target:
            header = source.read(_HEADER.size)
            if len(header) != _HEADER.size or not header.startswith(MAGIC):
                raise EncryptionError(f"{encrypted.name} is not an encrypted dashboard backup")
            _magic, salt, log2_n, r, p, size = _HEADER.unpack(header)
            if not 1 <= size <= 1 << 26:
                raise EncryptionError("the encrypted backup's chunk size is out of range (a damaged file?)")
            aead = _key(secret, salt, log2_n, r, p)
            index, chunk = 0, source.read(size + TAG)
            while True:
                following = source.read(size + TAG)
                last = not following
                try:
                    target.write(aead.decrypt(_nonce(index, last), chunk, header))
                except InvalidTag:
                    raise EncryptionError(
                        "the passphrase or key file does not open this backup (a wrong key, or the file was "
                        "changed after it was written)") from None
                if last:
                    break
                index, chunk = index + 1, following
    except BaseException:
        out.unlink(missing_ok=True)
        raise
