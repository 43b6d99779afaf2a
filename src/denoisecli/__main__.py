from denoisecli.cli import main

main()
