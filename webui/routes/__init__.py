"""The GUI's routes, one module per page: pages (HTML), options (Configure), datasets, jobs (Runs and the
run page), compare, tools."""
