"""Host-side container machinery: the engine, builder images, containers.

Only code that runs on the host imports this package.  The stage modules (spec, lock,
build, publish, ...) also run *inside* builder containers and must never import it.
"""
