from convcalc.cli.app import main

main()
