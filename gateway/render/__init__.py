"""Legacy bodies from the model: templates read from mappings/, written as JSON by orjson or as legacy XML."""
