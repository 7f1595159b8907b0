"""Built-in methods, one module each: the registry entry and the method's math (torch imported inside functions,
so the workflow can read the entries while it builds its DAG). See docs/add-a-method.md."""
