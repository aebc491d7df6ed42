"""Legacy bodies from the model: templates read from mappings/, serialized by orjson and xmltodict."""
