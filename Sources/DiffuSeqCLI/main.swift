import DiffuSeqCore
DiffuSeqCommand.main()
