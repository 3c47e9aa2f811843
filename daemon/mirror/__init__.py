"""`kioskd mirror build DIR`: the offline mirror a fleet installs from (ansible/README.md, "Offline mode").

    wheels/            the kioskd wheel (kiosk page built in) and the wheelhouse of every target
    locks/<arch>-cp<ver>.txt   the hashed lock of one target (name==version --hash=sha256:...)
    models/<file>.gguf the chat model
    voice/...          the Vosk models and Piper voices, at each item's mirror_path
    fleet-vars.json    the Ansible variables that point a fleet at this mirror
    manifest.json      every file above with its sha256 and size (`kioskd mirror verify DIR` re-checks them)
"""
