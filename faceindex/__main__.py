"""`python -m faceindex ...`: the same CLI as the `faceindex` command."""

from faceindex.cli import main

main()
