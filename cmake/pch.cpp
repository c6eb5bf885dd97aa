// Empty: exists so the shared precompiled header has a target to live on.
