"""Stage bodies, one module per area (`cloud`, `host`, `synapse`, ...), named in installer.plan."""
