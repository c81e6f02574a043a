from ptx.cli import main

main()
