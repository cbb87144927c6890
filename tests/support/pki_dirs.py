"""Master pki dirs laid out as Salt leaves them, and a failing rename, for the key pair tests."""

import os

import salt.crypt


def pki_dir_3008(folder, keypair, master_id="ha-master"):
    """A pki dir as Salt 3008 leaves it: <id>.pem/.pub and master.pem/.pub symlinks to them."""
    folder.mkdir()
    (folder / f"{master_id}.pem").write_text(keypair[0])
    (folder / f"{master_id}.pem").chmod(0o400)
    (folder / f"{master_id}.pub").write_text(keypair[1])
    os.symlink(folder / f"{master_id}.pem", folder / "master.pem")
    os.symlink(folder / f"{master_id}.pub", folder / "master.pub")
    return folder


def pki_dir_plain(folder):
    """The older layout: plain master.pem/master.pub written by salt.crypt.write_keys."""
    folder.mkdir()
    salt.crypt.write_keys(str(folder), "master", 2048)
    return folder


def failing_replace_for(target, error=None):
    """os.replace that fails (``error``, default EROFS) when a staged temp file is renamed onto ``target``."""
    error = error or OSError(30, "Read-only file system")
    real_replace = os.replace

    def replace(src, dst):
        if os.path.basename(str(src)).endswith(".tmp") and str(dst) == str(target):
            raise error
        return real_replace(src, dst)

    return replace
