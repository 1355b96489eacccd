"""The site: names and layout of its files, folder statistics and charts, pages, and the output
folder it is swapped into. Reads records only; never imports torch."""
