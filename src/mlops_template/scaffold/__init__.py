"""New projects: rendering the template, vendoring this library's wheel, locking."""
